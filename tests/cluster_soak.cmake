# Soak test of the distributed runtime: 100 requests over three real `braid worker`
# processes on 127.0.0.1 with random kills, hangs and slowdowns, and leak checks
# (tests/integration/test_cluster_soak.cpp).
if(TARGET braid_dist)
  add_executable(test_cluster_soak integration/test_cluster_soak.cpp)
  target_compile_options(test_cluster_soak PRIVATE ${BRAID_WARNINGS} ${BRAID_OPT})
  target_link_libraries(test_cluster_soak PRIVATE braid_dist braid_testutil GTest::gtest GTest::gtest_main)
  add_dependencies(test_cluster_soak braid)
  # Under a minute of processes; alone (RUN_SERIAL): its timing bounds and leak checks
  # assume the two cores are not also running the other cluster tests.
  gtest_discover_tests(test_cluster_soak DISCOVERY_TIMEOUT 60
    PROPERTIES ENVIRONMENT "BRAID_ASSETS=${BRAID_ASSETS}" LABELS "integration" TIMEOUT 180 RUN_SERIAL TRUE)
endif()
