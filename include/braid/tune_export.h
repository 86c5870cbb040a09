// Moving trained weights between a TrainModel (Hugging Face layout, f32) and GGUF files in
// llama.cpp's conventions, which braid::Model::load runs:
//
//   braid::tune::export_gguf(trainer.model(), tokenizer_gguf.get(), "model.gguf", {});
//   auto model = braid::Model::load("model.gguf");  // same logits as TrainPass
//
//   auto init = braid::tune::import_gguf(*braid::GgufFile::open("base.gguf"));  // fine-tune
//
// Llama's query and key rows are permuted from Hugging Face's rotate-half RoPE layout to
// GGUF's interleaved pairs on export (as convert_hf_to_gguf.py does) and back on import.
#pragma once

#include <string>

#include "braid/dtype.h"
#include "braid/gguf.h"
#include "braid/train.h"

namespace braid::tune {

struct ExportOptions {
  // Weight matrices (and embeddings): F32, F16 or BF16. Norm weights and biases stay F32.
  DType type = DType::F32;
  std::string name = "braid";  // general.name
};

// Writes `model` to `path` (atomically): general.architecture "llama" or "gpt2", the
// hyperparameters, the tensors with llama.cpp's names, and every tokenizer.* key of
// `tokenizer` (a model or tokenizer-only GGUF; null: none). Throws braid::Error when the
// tokenizer's vocabulary is larger than the model's, for an unsupported type, or when the
// file cannot be written.
void export_gguf(const TrainModel& model, const GgufFile* tokenizer, const std::string& path,
                 const ExportOptions& options = {});

// Reads a "llama" or "gpt2" GGUF model (any weight type braid can dequantize) into a
// TrainModel. Throws braid::Error naming the file for other architectures and for
// features training lacks (attention biases on llama, NEOX or scaled RoPE, partial
// rotary dimensions).
TrainModel import_gguf(const GgufFile& gguf);

}  // namespace braid::tune
