braid_test(test_base braid_base)
