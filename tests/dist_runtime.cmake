# Distributed runtime: transport, worker, head (module dist), and multi-process cluster
# tests that start real `braid worker` processes on 127.0.0.1 (tests/integration/).
if(TARGET braid_dist)
  braid_test(test_transport braid_dist)

  add_executable(test_cluster integration/test_cluster.cpp test_util.cpp)
  target_compile_options(test_cluster PRIVATE ${BRAID_WARNINGS} ${BRAID_OPT})
  target_include_directories(test_cluster PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  target_link_libraries(test_cluster PRIVATE braid_dist GTest::gtest GTest::gtest_main)
  target_compile_definitions(test_cluster PRIVATE
    BRAID_DEFAULT_ASSETS="${BRAID_ASSETS}"
    BRAID_BINARY="$<TARGET_FILE:braid>")
  add_dependencies(test_cluster braid)
  gtest_discover_tests(test_cluster DISCOVERY_TIMEOUT 60
    PROPERTIES ENVIRONMENT "BRAID_ASSETS=${BRAID_ASSETS}" LABELS "integration" TIMEOUT 120)
endif()
