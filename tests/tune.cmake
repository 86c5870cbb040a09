braid_test(test_train braid_tune)
braid_test(test_train_grad braid_tune)
