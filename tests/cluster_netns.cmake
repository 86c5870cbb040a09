# A worker whose network link is cut mid-run: one `braid worker` in its own network
# namespace behind a veth pair, the link taken down while the head generates
# (tests/integration/test_cluster_netns.cpp). Needs root and `ip`; skips otherwise.
if(TARGET braid_dist)
  add_executable(test_cluster_netns integration/test_cluster_netns.cpp)
  target_compile_options(test_cluster_netns PRIVATE ${BRAID_WARNINGS} ${BRAID_OPT})
  target_link_libraries(test_cluster_netns PRIVATE braid_dist braid_testutil GTest::gtest GTest::gtest_main)
  add_dependencies(test_cluster_netns braid)
  # Each test bounds its own children and takes under ~15 s on 2 cores.
  gtest_discover_tests(test_cluster_netns DISCOVERY_TIMEOUT 60
    PROPERTIES ENVIRONMENT "BRAID_ASSETS=${BRAID_ASSETS}" LABELS "integration" TIMEOUT 120)
endif()
