# Distributed runtime: transport, worker, head (module dist), and multi-process cluster
# tests that start real `braid worker` processes on 127.0.0.1 (tests/integration/).
if(TARGET braid_dist)
  braid_test(test_transport braid_dist)
  braid_test(test_dist_runtime braid_dist)

  add_executable(test_cluster integration/test_cluster.cpp)
  target_compile_options(test_cluster PRIVATE ${BRAID_WARNINGS} ${BRAID_OPT})
  target_link_libraries(test_cluster PRIVATE braid_dist braid_testutil GTest::gtest GTest::gtest_main)
  add_dependencies(test_cluster braid)
  # About 20 s of processes on 2 cores in all; each test bounds its own children.
  gtest_discover_tests(test_cluster DISCOVERY_TIMEOUT 60
    PROPERTIES ENVIRONMENT "BRAID_ASSETS=${BRAID_ASSETS}" LABELS "integration" TIMEOUT 120)
endif()
