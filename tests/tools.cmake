# The model tools: quantize (GGUF -> GGUF with llama.cpp's mixes), synth (random-weight
# models), bench (speed, memory, bandwidth) and the progress bar; library and CLI.
braid_test(test_quantize braid_convert)
braid_test(test_bench_cli braid_engine)
