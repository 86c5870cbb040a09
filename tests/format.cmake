braid_test(test_gguf braid_format)
braid_test(test_safetensors braid_format)
