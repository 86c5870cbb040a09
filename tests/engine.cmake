braid_test(test_sampler braid_engine)
braid_test(test_generate braid_engine)
braid_test(test_cli braid_base)
