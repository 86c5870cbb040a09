braid_test(test_tokenizer braid_text)
