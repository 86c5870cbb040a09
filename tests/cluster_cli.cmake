# The user-facing cluster commands end to end: `braid plan`, --cluster files, `braid bench`
# over the ring and the quick start's `braid cluster --local` (real `braid worker`
# processes on 127.0.0.1; tests/integration/test_cluster_cli.cpp).
if(TARGET braid_dist)
  add_executable(test_cluster_cli integration/test_cluster_cli.cpp)
  target_compile_options(test_cluster_cli PRIVATE ${BRAID_WARNINGS} ${BRAID_OPT})
  target_link_libraries(test_cluster_cli PRIVATE braid_dist braid_testutil GTest::gtest GTest::gtest_main)
  add_dependencies(test_cluster_cli braid)
  # A few seconds of processes per test on stories260K; each test bounds its children.
  gtest_discover_tests(test_cluster_cli DISCOVERY_TIMEOUT 60
    PROPERTIES ENVIRONMENT "BRAID_ASSETS=${BRAID_ASSETS}"
    # A second variable as its own property: a list would be split by gtest_discover_tests.
    ENVIRONMENT_MODIFICATION "BRAID_DEFAULT_MODEL=set:${PROJECT_SOURCE_DIR}/models/braid-default.gguf"
    LABELS "integration" TIMEOUT 120)
endif()
