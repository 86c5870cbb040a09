braid_test(test_dataset braid_tune)
braid_test(test_bpe_train braid_tune)
braid_test(test_train_cli braid_tune)
