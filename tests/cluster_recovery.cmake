# Failure recovery of the distributed runtime: real `braid worker` processes on
# 127.0.0.1 that die or hang mid-run (tests/integration/test_cluster_recovery.cpp).
if(TARGET braid_dist)
  add_executable(test_cluster_recovery integration/test_cluster_recovery.cpp)
  target_compile_options(test_cluster_recovery PRIVATE ${BRAID_WARNINGS} ${BRAID_OPT})
  target_link_libraries(test_cluster_recovery PRIVATE braid_dist braid_testutil GTest::gtest GTest::gtest_main)
  add_dependencies(test_cluster_recovery braid)
  # About 30 s of processes on 2 cores; each test bounds its own children.
  gtest_discover_tests(test_cluster_recovery DISCOVERY_TIMEOUT 60
    PROPERTIES ENVIRONMENT "BRAID_ASSETS=${BRAID_ASSETS}" LABELS "integration" TIMEOUT 180)
endif()

# Re-plans without profiles (speeds from run time) and preloading
# (tests/integration/test_cluster_replan.cpp): real workers too, a few seconds.
if(TARGET braid_dist)
  add_executable(test_cluster_replan integration/test_cluster_replan.cpp)
  target_compile_options(test_cluster_replan PRIVATE ${BRAID_WARNINGS} ${BRAID_OPT})
  target_link_libraries(test_cluster_replan PRIVATE braid_dist braid_testutil GTest::gtest GTest::gtest_main)
  add_dependencies(test_cluster_replan braid)
  gtest_discover_tests(test_cluster_replan DISCOVERY_TIMEOUT 60
    PROPERTIES ENVIRONMENT "BRAID_ASSETS=${BRAID_ASSETS}" LABELS "integration" TIMEOUT 120)
endif()
