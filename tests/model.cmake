braid_test(test_kernels braid_tensor)
braid_test(test_model braid_model)
