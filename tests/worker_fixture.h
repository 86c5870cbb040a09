// A gtest fixture for tests that run rings of `braid worker` processes on 127.0.0.1
// (tests/worker_process.h): a temporary folder holding a cluster secret, and workers
// started with it, killed outright when the test ends (some tests hang them on purpose).
#pragma once

#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "test_util.h"
#include "worker_process.h"

namespace braid::test {

class WorkerFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = temp_dir();
    secret_ = dir_ + "/secret";
    std::ofstream(secret_) << "cluster tests' secret";
  }

  // One worker per entry; worker i gets extra[i] on its command line.
  void start_workers(const std::vector<std::vector<std::string>>& extra) {
    workers_.clear();
    for (const auto& e : extra) {
      std::vector<std::string> args = {"--secret-file", secret_};
      args.insert(args.end(), e.begin(), e.end());
      workers_.push_back(std::make_unique<KilledWorker>(args, dir_));
    }
    for (const auto& w : workers_) ASSERT_TRUE(w->ok());
  }

  std::string dir_, secret_;
  std::vector<std::unique_ptr<KilledWorker>> workers_;
};

}  // namespace braid::test
