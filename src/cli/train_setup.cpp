#include "cli/train_setup.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "braid/error.h"
#include "braid/mapped_file.h"
#include "braid/tune_export.h"
#include "cli/cli_util.h"
#include "convert/converters.h"

namespace braid::cli {
namespace fs = std::filesystem;

const std::vector<Preset>& presets() {
  // dim, layers, heads, kv_heads, ffn (about 8/3 dim, as Llama), context.
  static const std::vector<Preset> p = {
      {"tiny", 64, 2, 4, 4, 176, 256},
      {"small", 256, 6, 8, 4, 688, 512},
      {"base", 512, 8, 8, 8, 1376, 1024},
  };
  return p;
}

namespace {

const Preset& find_preset(const std::string& name) {
  const std::string n = name.empty() ? "small" : name;
  std::string known;
  for (const Preset& p : presets()) {
    if (n == p.name) return p;
    known += known.empty() ? p.name : cat(", ", p.name);
  }
  fail("--preset: unknown preset '", n, "' (known: ", known, ")");
}

bool shape_flags(const TrainArgs& a) {
  return !a.preset.empty() || a.dim || a.layers || a.heads || a.kv_heads || a.ffn || a.ctx ||
         a.tie_embeddings;
}

tune::ModelConfig scratch_config(const TrainArgs& a, int vocab) {
  const Preset& p = find_preset(a.preset);
  tune::ModelConfig c;
  c.arch = tune::Arch::kLlama;
  c.dim = a.dim ? a.dim : p.dim;
  c.n_layer = a.layers ? a.layers : p.layers;
  c.n_head = a.heads ? a.heads : p.heads;
  // Without --kv-heads: the preset's grouping when its head count is kept, else none.
  c.n_kv_head = a.kv_heads ? a.kv_heads : (a.heads ? c.n_head : p.kv_heads);
  c.ffn_dim = a.ffn ? a.ffn : p.ffn;
  c.max_seq = a.ctx ? a.ctx : std::max(p.ctx, a.seq);
  c.vocab = vocab;
  c.tied_head = a.tie_embeddings;
  check(c.dim % c.n_head == 0, "--dim ", c.dim, " is not a multiple of --heads ", c.n_head);
  c.head_dim = c.dim / c.n_head;
  check(c.head_dim % 2 == 0, "head size ", c.head_dim, " (--dim / --heads) must be even for RoPE");
  check(c.n_kv_head <= c.n_head && c.n_head % c.n_kv_head == 0, "--heads ", c.n_head,
        " is not a multiple of --kv-heads ", c.n_kv_head);
  check(a.seq <= c.max_seq, "--seq ", a.seq, " exceeds the model's context of ", c.max_seq, " (--ctx)");
  c.validate("model");
  return c;
}

uint64_t fnv(uint64_t h, std::string_view s) {
  for (char c : s) h = (h ^ uint8_t(c)) * 0x100000001b3ull;
  return (h ^ 0xff) * 0x100000001b3ull;  // a separator, so "ab","c" != "a","bc"
}

uint64_t tokenizer_fingerprint(const GgufFile& g, const Tokenizer& tok) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (int32_t i = 0; i < tok.n_vocab(); ++i) h = fnv(h, tok.piece(i));
  if (const GgufValue* m = g.find("tokenizer.ggml.merges"))
    for (const std::string& s : m->strs) h = fnv(h, s);
  return fnv(h, cat(tok.bos(), ",", tok.eos(), ",", tok.add_bos()));
}

// Writes the metadata to a GGUF beside `near` and maps it; the file is removed at once
// (the mapping stays valid).
std::shared_ptr<const GgufFile> temp_gguf(const GgufWriter& w, const std::string& near) {
  const std::string path = cat(near, ".tokenizer-", getpid(), ".gguf");
  w.write(path);
  std::shared_ptr<const GgufFile> g;
  try {
    g = GgufFile::open(path);
  } catch (...) {
    std::error_code ec;
    fs::remove(path, ec);
    throw;
  }
  std::error_code ec;
  fs::remove(path, ec);
  return g;
}

}  // namespace

void validate_args(const TrainArgs& a) {
  check(a.steps >= 1, "--steps must be at least 1 (got ", a.steps, ")");
  check(a.batch >= 1, "--batch must be at least 1 (got ", a.batch, ")");
  check(a.seq >= 2, "--seq must be at least 2 (got ", a.seq, ")");
  check(a.accum >= 1, "--accum must be at least 1 (got ", a.accum, ")");
  check(a.lr > 0, "--lr must be positive (got ", a.lr, ")");
  check(a.min_lr < 0 || a.min_lr <= a.lr, "--min-lr ", a.min_lr, " exceeds --lr ", a.lr);
  check(a.weight_decay >= 0, "--weight-decay must not be negative");
  check(a.grad_clip >= 0, "--grad-clip must not be negative (0 turns clipping off)");
  check(a.beta1 >= 0 && a.beta1 < 1 && a.beta2 >= 0 && a.beta2 < 1, "--beta1 and --beta2 must be in [0, 1)");
  check(a.val_frac >= 0 && a.val_frac < 1, "--val-frac must be in [0, 1) (got ", a.val_frac, ")");
  check(a.save_every >= 0 && a.stop_after >= 0, "--save-every and --stop-after must not be negative");
  check(a.checkpoint.empty() || a.checkpoint != a.out, "--checkpoint and -o must be different files");
  check(a.save_every == 0 || !a.checkpoint.empty(), "--save-every needs --checkpoint FILE");
  check(a.stop_after == 0 || !a.checkpoint.empty(), "--stop-after needs --checkpoint FILE to continue from");
  check(a.type == "f32" || a.type == "f16" || a.type == "bf16", "--type: expected f32, f16 or bf16, got '",
        a.type, "'");
  check(!(a.vocab_size && !a.tokenizer.empty()), "give --tokenizer FILE or --vocab-size N, not both");
  check(!(a.vocab_size && !a.init.empty()),
        "--vocab-size cannot be combined with --init: a pretrained model "
        "keeps its own vocabulary");
  check(a.vocab_size || !a.tokenizer.empty() || !a.init.empty(),
        "no tokenizer: give --tokenizer FILE, or --vocab-size N to train one on the data");
  check(a.init.empty() || !shape_flags(a),
        "--preset and the shape flags (--dim, --layers, ...) cannot be "
        "combined with --init: the model's shape comes from it");
  if (!a.preset.empty()) find_preset(a.preset);
}

TokenizerSource resolve_tokenizer(const TrainArgs& a, const std::vector<tune::Document>& train_docs) {
  TokenizerSource s;
  if (!a.tokenizer.empty()) {
    s.gguf = open_gguf(a.tokenizer);
    s.description = a.tokenizer;
  } else if (!a.init.empty() && fs::is_directory(a.init)) {
    const fs::path tj = fs::path(a.init) / "tokenizer.json";
    check(fs::exists(tj), a.init, ": no tokenizer.json; give --tokenizer FILE");
    GgufWriter w;
    const fs::path config = fs::path(a.init) / "config.json";
    convert::add_hf_tokenizer(tj.string(), w, fs::exists(config) ? read_file(config.string()) : "");
    s.gguf = temp_gguf(w, a.out);
    s.description = tj.string();
  } else if (!a.init.empty()) {
    s.gguf = open_gguf(a.init);
    s.description = a.init;
  } else {
    BpeTrainOptions opt;
    opt.vocab_size = a.vocab_size;
    opt.pre = a.pre;
    const BpeVocab v = train_tokenizer_on(train_docs, opt);
    GgufWriter w;
    v.to_gguf(w);
    s.gguf = temp_gguf(w, a.out);
    s.description = "byte-level BPE trained on the data";
  }
  s.tok = load_tokenizer(*s.gguf);
  s.fingerprint = tokenizer_fingerprint(*s.gguf, *s.tok);
  return s;
}

TrainData prepare_data(const TrainArgs& a, const tune::DocumentSplit& split, const Tokenizer& tok,
                       ThreadPool& pool) {
  TrainData d;
  const int32_t pad = tok.eos() >= 0 ? tok.eos() : 0;
  const tune::TokenStream train = tune::tokenize_documents(split.train, tok, &pool);
  d.train = tune::pack_rows(train, a.seq, pad);
  std::string val_desc;
  if (split.by_rows) {
    if (a.val_frac > 0) tune::split_rows(d.train, d.val, a.val_frac, a.seed);
    val_desc = cat(d.val.rows(), " rows held out (too few documents to hold whole ones out)");
  } else {
    const tune::TokenStream val = tune::tokenize_documents(split.val, tok, &pool);
    d.val = tune::pack_rows(val, a.seq, pad);
    val_desc = cat(split.val.size(), " documents, ", val.size(), " tokens");
  }
  check(d.train.rows() > 0, "the training data has fewer than 2 tokens: nothing to learn");
  d.summary = cat("train: ", split.train.size(), " documents, ", train.size(), " tokens, ", d.train.rows(),
                  " rows of ", a.seq, " | validation: ", val_desc);
  return d;
}

tune::TrainModel initial_model(const TrainArgs& a, const Tokenizer& tok) {
  if (a.init.empty()) return tune::TrainModel::random(scratch_config(a, tok.n_vocab()), a.seed);
  tune::TrainModel m =
      fs::is_directory(a.init) ? tune::TrainModel::load_hf(a.init) : tune::import_gguf(*open_gguf(a.init));
  check(tok.n_vocab() <= m.config().vocab, "the tokenizer has ", tok.n_vocab(),
        " tokens, more than the model's vocabulary of ", m.config().vocab);
  check(a.seq <= m.config().max_seq, "--seq ", a.seq, " exceeds the context of ", m.config().max_seq, " of ",
        a.init);
  return m;
}

std::string model_identity(const TrainArgs& a, const Tokenizer& tok) {
  if (!a.init.empty()) return "init:" + a.init;
  return scratch_config(a, tok.n_vocab()).to_json();
}

}  // namespace braid::cli
