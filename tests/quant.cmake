# Quantized block formats and their SIMD dot-product kernels (src/tensor/quant*).
braid_test(test_quant braid_tensor)
