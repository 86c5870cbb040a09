// AVX-512 VNNI kernels for q4_0, q5_0 and q8_0 that put tokens in the vector lanes for
// prefill and rows in the lanes for decode, both summing in one canonical order. Included
// by quant_avx512-inl.h (after its KNibble / KQ8_0 kernels, whose Decode they reuse)
// inside the HWY_AVX3_DL and HWY_AVX3 target namespaces.
//
// Why: the tile driver (quant_tile-inl.h) keeps the elements of a block in the lanes, so
// every (row, token, 4 blocks) pays a scale multiply, a conversion and an FMA on top of
// its two vpdpbusd: 5 vector operations per 128 multiply-adds. With 16 tokens in the
// lanes, one vpdpbusd takes 4 weight bytes broadcast from memory against 4 bytes of each
// of 16 tokens, and the f32 work is paid once per (row, block, 16 tokens): 11 operations
// per 512 multiply-adds against 20 (q4_0 pp64 about 2x, docs/benchmarks.md). Weights
// are broadcast from a small per-tile scratch, decoded once per 8 rows and up to 64
// tokens: nothing is repacked in memory, so RSS stays the file.
//
// The canonical order, which decode and prefill both follow so that their results agree
// bit for bit (recovery replays a sequence as a batch and must rebuild exactly the cache
// that decode built token by token):
//
//   y = 0;  for each block b in order:  y = fma(float(isum_b), dw_b * dx_b, y)
//
// isum_b is the block's exact integer dot product (weights with their code offset, the
// activation's 8-bit values), dw_b and dx_b the weight and activation block scales.
//
// Integer forms. vpdpbusd multiplies unsigned by signed bytes, and only the signed
// operand can be broadcast from memory, so prefill feeds the weights as signed bytes
// (s = q - 8 for q4_0, q - 16 for q5_0, q for q8_0) and the activations as unsigned
// x + 128, starting each block's sum at -128 * sum(s) (kept in the scratch):
// sum((x + 128) s) - 128 sum(s) = sum(x s). Decode keeps the weights in the vector and
// the activation in memory: the nibble types as unsigned codes with the offset folded
// into the record's ebias, q8_0 as w + 128 less 128 * sum(x). All give the same integers.
namespace lanes {

constexpr int kGroup = 16;  // tokens per panel group: one per f32 lane
constexpr int kRows = 8;    // rows per prefill tile (8 accumulators + 8 activation vectors)
constexpr int kMaxPass = 64;  // tokens per pass (4 groups: the panel stays in L2)
// Below this many tokens in a group, decoding token by token is cheaper than a group
// whose lanes are mostly padding (prefill costs the same for 1 or 16 tokens).
constexpr int kMinGroup = 4;
// A unit's bytes in a group's panel: 32 vectors of activation bytes, 4 of scales.
constexpr int64_t kUnitPanel = 36 * 64;

// Lane 4b + j (j = 0..3) of a 16-lane vector belongs to block b of a 4-block unit.
BRAID_VNNI inline __m512i LaneBlock() { return _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), 2); }

// Four rows' per-block partial sums (lanes 4b..4b+3 of each hold block b's partials, in
// any split) into one vector whose lane 4b + i is row i's sum for block b (exact).
BRAID_VNNI HWY_INLINE __m512i TransposeReduce(__m512i a, __m512i b, __m512i c, __m512i d) {
  const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
  const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
  return _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
}

// Four rows' block scales (lanes 4b..4b+3 of each = its scale of block b) into lane
// 4b + i = row i's scale of block b.
BRAID_VNNI HWY_INLINE __m512 BlendRows(const __m512 (&dw)[4]) {
  __m512 v = dw[0];
  v = _mm512_mask_mov_ps(v, 0x2222, dw[1]);
  v = _mm512_mask_mov_ps(v, 0x4444, dw[2]);
  return _mm512_mask_mov_ps(v, 0x8888, dw[3]);
}

// 16 x 16 transpose of 32-bit elements: out[j] lane i = r[i] lane j.
BRAID_VNNI HWY_INLINE void Transpose16(const __m512i (&r)[16], __m512i (&out)[16]) {
  __m512i u[4][4];  // u[Q][c]: 128-bit lane L holds rows 4Q..4Q+3 of element 4L + c
  for (int q = 0; q < 4; ++q) {
    const __m512i* x = r + 4 * q;
    const __m512i t0 = _mm512_unpacklo_epi32(x[0], x[1]), t1 = _mm512_unpackhi_epi32(x[0], x[1]);
    const __m512i t2 = _mm512_unpacklo_epi32(x[2], x[3]), t3 = _mm512_unpackhi_epi32(x[2], x[3]);
    u[q][0] = _mm512_unpacklo_epi64(t0, t2);
    u[q][1] = _mm512_unpackhi_epi64(t0, t2);
    u[q][2] = _mm512_unpacklo_epi64(t1, t3);
    u[q][3] = _mm512_unpackhi_epi64(t1, t3);
  }
  for (int c = 0; c < 4; ++c) {  // 4 x 4 transpose of 128-bit lanes
    const __m512i v0 = _mm512_shuffle_i32x4(u[0][c], u[1][c], 0x44), v1 = _mm512_shuffle_i32x4(u[0][c], u[1][c], 0xEE);
    const __m512i v2 = _mm512_shuffle_i32x4(u[2][c], u[3][c], 0x44), v3 = _mm512_shuffle_i32x4(u[2][c], u[3][c], 0xEE);
    out[0 + c] = _mm512_shuffle_i32x4(v0, v2, 0x88);
    out[4 + c] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
    out[8 + c] = _mm512_shuffle_i32x4(v1, v3, 0x88);
    out[12 + c] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
  }
}

// Lane 4b + j of the result takes lanes 2j, 2j+1 of block b's eight, where a holds
// blocks 0, 1 (lanes 0..7, 8..15) and b blocks 2, 3: per-block partial sums of eight
// lanes each into the four-lane layout of TransposeReduce.
BRAID_VNNI HWY_INLINE __m512i PairsToQuads(__m512i a, __m512i b) {
  const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  return _mm512_add_epi32(_mm512_permutex2var_epi32(a, ie, b), _mm512_permutex2var_epi32(a, io, b));
}

// Scales of blocks 0, 1 (lanes 0..7, 8..15 of a) and 2, 3 (of b) into lanes 4b..4b+3.
BRAID_VNNI HWY_INLINE __m512 PairsToQuadsPs(__m512 a, __m512 b) {
  return _mm512_permutex2var_ps(a, _mm512_setr_epi32(0, 0, 0, 0, 8, 8, 8, 8, 16, 16, 16, 16, 24, 24, 24, 24), b);
}

// ---------------------------------------------------------------- types

// Decode of 4 rows' unit u (the rows at p[i]) against the activation record rec, through
// each row's Partials: isum lane 4b + i = row i's exact integer sum of block b, dw lane
// 4b + i = row i's scale of block b. Types with a cheaper way define their own Rows4.
template <class T>
BRAID_VNNI HWY_INLINE void Rows4ByRow(const T& kt, const uint8_t* const (&p)[4], int64_t u, const char* rec,
                                      __m512i& isum, __m512& dw) {
  __m512i s[4];
  __m512 d[4];
  for (int i = 0; i < 4; ++i) kt.Partials(p[i], u, rec, s[i], d[i]);
  isum = TransposeReduce(s[0], s[1], s[2], s[3]);
  dw = BlendRows(d);
}

// Nibble types without a min (q4_0, q5_0): codes 0..15 / 0..31 minus kOff.
template <DType kType>
struct LNibble {
  using K = KNibble<kType>;
  static constexpr int kOff = kType == DType::Q4_0 ? 8 : 16;
  // Whether all 4 block scales of a unit lie in its first 64 bytes (q4_0: at 0, 18, 36,
  // 54), so that Rows4 gathers 4 rows' scales with two word permutes.
  static constexpr bool kScalesInL0 = 3 * K::kBlock + 2 <= 64;
  static constexpr int kUnitBytes = K::kUnitBytes;
  K k;
  __m512i idx_s01, idx_s23;  // word lane 4b + i <- row i's scale of block b (rows 0,1 / 2,3)

  BRAID_VNNI LNibble() {
    alignas(64) uint16_t a[32] = {}, b[32] = {};
    for (int w = 0; w < 16; ++w) {
      const int blk = w / 4, i = w % 4;
      const uint16_t src = static_cast<uint16_t>((i % 2) * 32 + blk * K::kBlock / 2);
      (i < 2 ? a : b)[w] = src;
    }
    idx_s01 = _mm512_load_si512(a);
    idx_s23 = _mm512_load_si512(b);
  }

  // Record half h (64 bytes of qs) dword d holds elements 4(d%4) + 16h .. of block d/4:
  // its slot among the unit's 32 panel vectors (block j at 8j, element group g at +g).
  static int Slot(int h, int d) { return (d / 4) * 8 + (d % 4) + 4 * h; }

  // Decode: this row's unit u against the activation record: per-block partial sums and
  // the weight scales, both with block b in lanes 4b..4b+3.
  BRAID_VNNI HWY_INLINE void Partials(const uint8_t* row, int64_t u, const char* rec, __m512i& s, __m512& dw) const {
    const auto d = k.Decode(row, u);
    s = _mm512_loadu_si512(rec + K::kEbias);
    s = _mm512_dpbusd_epi32(s, d.lo, _mm512_loadu_si512(rec));
    s = _mm512_dpbusd_epi32(s, d.hi, _mm512_loadu_si512(rec + 64));
    dw = d.dw;
  }

  BRAID_VNNI HWY_INLINE void Rows4(const uint8_t* const (&p)[4], int64_t u, const char* rec, __m512i& isum,
                                   __m512& dw) const {
    if constexpr (!kScalesInL0) {
      Rows4ByRow(*this, p, u, rec, isum, dw);
    } else {
      const __m512i e = _mm512_loadu_si512(rec + K::kEbias);
      const __m512i x0 = _mm512_loadu_si512(rec), x1 = _mm512_loadu_si512(rec + 64);
      __m512i l0[4], s[4];
      for (int i = 0; i < 4; ++i) {
        __m512i l1;
        k.Load(p[i], u, l0[i], l1);
        const auto d = k.Decode(l0[i], l1, /*scales=*/false);
        s[i] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(e, d.lo, x0), d.hi, x1);
      }
      isum = TransposeReduce(s[0], s[1], s[2], s[3]);
      const __m512i w01 = _mm512_permutex2var_epi16(l0[0], idx_s01, l0[1]);
      const __m512i w23 = _mm512_permutex2var_epi16(l0[2], idx_s23, l0[3]);
      dw = F16x16(_mm512_mask_blend_epi16(0xCCCCCCCC, w01, w23));
    }
  }

  // Lane 4b + i: the activation's scale of block b.
  BRAID_VNNI HWY_INLINE __m512 Dx(const ActLayout&, const char* rec) const {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(rec + K::kEscale));
  }

  // Prefill: unit u of a row as signed weights in natural element order (blocks 0, 1 in
  // w[0], blocks 2, 3 in w[1]) and the block scales in lanes 4b..4b+3.
  BRAID_VNNI HWY_INLINE void Weights(const uint8_t* row, int64_t u, __m512i (&w)[2], __m512& dw) const {
    const auto d = k.Decode(row, u);
    // lo / hi: 128-bit lane j = block j's elements 0..15 / 16..31.
    const __m512i off = _mm512_set1_epi8(kOff);
    w[0] = _mm512_sub_epi8(_mm512_permutex2var_epi64(d.lo, _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), d.hi), off);
    w[1] = _mm512_sub_epi8(_mm512_permutex2var_epi64(d.lo, _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15), d.hi), off);
    dw = d.dw;
  }
};

struct LQ8_0 {
  using K = KQ8_0;
  static constexpr int kUnitBytes = 4 * K::kBlock;
  K k;
  // Dword lane 4b + i <- the dword of row i's half holding block b's scale (dword 0 of
  // the half for an even block, its low word; dword 8 for an odd one, its high word),
  // from rows (0, 1) or (2, 3) of a half.
  __m512i idx_sd;

  BRAID_VNNI LQ8_0() : idx_sd(_mm512_setr_epi32(0, 16, 0, 16, 8, 24, 8, 24, 0, 16, 0, 16, 8, 24, 8, 24)) {}

  // Record half h (blocks 2h, 2h+1 in natural order) dword d: block 2h + d/8, group d%8.
  static int Slot(int h, int d) { return (2 * h + d / 8) * 8 + d % 8; }

  // Decode multiplies w + 128 (unsigned) by x and subtracts 128 * sum(x), from the
  // record's sy, once per 4 rows: 2 operations per 64 weights, against 4 for |w| times x
  // with w's sign.
  BRAID_VNNI HWY_INLINE void Rows4(const uint8_t* const (&p)[4], int64_t u, const char* rec, __m512i& isum,
                                   __m512& dw) const {
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
    const __m512i x0 = _mm512_loadu_si512(rec), x1 = _mm512_loadu_si512(rec + 64);
    __m512i s[4], l0[4][2];
    for (int i = 0; i < 4; ++i) {
      __m512i sh[2];
      for (int h = 0; h < 2; ++h) {
        __m512i l1;
        k.Half(p[i], u, h, l0[i][h], l1);
        const __m512i q = _mm512_xor_si512(Gather2(l0[i][h], k.idx_qs, l1), flip);
        sh[h] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, h == 0 ? x0 : x1);
      }
      s[i] = PairsToQuads(sh[0], sh[1]);
    }
    const __m512i sy = _mm512_permutexvar_epi32(LaneBlock(), _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rec + K::kSy))));
    isum = _mm512_sub_epi32(TransposeReduce(s[0], s[1], s[2], s[3]), _mm512_slli_epi32(sy, 7));
    // Scales: dwords holding them, rows in lanes, then each odd block's high word down.
    __m512i v[2];
    for (int h = 0; h < 2; ++h) {
      v[h] = _mm512_mask_blend_epi32(0xCCCC, _mm512_permutex2var_epi32(l0[0][h], idx_sd, l0[1][h]),
                                     _mm512_permutex2var_epi32(l0[2][h], idx_sd, l0[3][h]));
    }
    __m512i d = _mm512_mask_blend_epi32(0xFF00, v[0], v[1]);
    d = _mm512_mask_srli_epi32(d, 0xF0F0, d, 16);
    dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(d));
  }

  BRAID_VNNI HWY_INLINE __m512 Dx(const ActLayout& L, const char* rec) const {
    return _mm512_permutexvar_ps(LaneBlock(), _mm512_castps128_ps512(_mm_loadu_ps(reinterpret_cast<const float*>(rec + L.dx))));
  }

  BRAID_VNNI HWY_INLINE void Weights(const uint8_t* row, int64_t u, __m512i (&w)[2], __m512& dw) const {
    __m512 dh[2];
    k.Codes(row, u, w, dh);
    dw = PairsToQuadsPs(dh[0], dh[1]);
  }
};

// ---------------------------------------------------------------- decode

// 4 x 4 transpose of 128-bit lanes: out[b] lane g = v[g] lane b.
BRAID_VNNI HWY_INLINE void Transpose4x128(const __m512 (&v)[4], __m512 (&out)[4]) {
  const __m512 t0 = _mm512_shuffle_f32x4(v[0], v[1], 0x44), t1 = _mm512_shuffle_f32x4(v[0], v[1], 0xEE);
  const __m512 t2 = _mm512_shuffle_f32x4(v[2], v[3], 0x44), t3 = _mm512_shuffle_f32x4(v[2], v[3], 0xEE);
  out[0] = _mm512_shuffle_f32x4(t0, t2, 0x88);
  out[1] = _mm512_shuffle_f32x4(t0, t2, 0xDD);
  out[2] = _mm512_shuffle_f32x4(t1, t3, 0x88);
  out[3] = _mm512_shuffle_f32x4(t1, t3, 0xDD);
}

// A decode pass: kPassGroups groups of 4 rows from r (a short last pass repeats row
// r1 - 1), and the prefetch of the next pass's rows.
constexpr int kPassGroups = 4, kPassRows = 4 * kPassGroups;
struct Pass {
  const uint8_t* p[kPassGroups][4];
  bool more;          // another pass follows (its rows are worth prefetching)
  int64_t next_pass;  // bytes from a row to the same place in the next pass

  BRAID_VNNI HWY_INLINE Pass(const uint8_t* W, size_t stride, int64_t r, int64_t r1)
      : more(r + kPassRows < r1), next_pass(kPassRows * static_cast<int64_t>(stride)) {
    for (int g = 0; g < kPassGroups; ++g) {
      for (int i = 0; i < 4; ++i) p[g][i] = W + std::min(r + 4 * g + i, r1 - 1) * stride;
    }
  }

  // Prefetches into L2 `lines` cache lines of group g's rows in the next pass, from byte
  // `at` of each row.
  BRAID_VNNI HWY_INLINE void Prefetch(int g, int64_t at, int lines) const {
    if (!more) return;
    for (int i = 0; i < 4; ++i) {
      const char* pf = reinterpret_cast<const char*>(p[g][i]) + next_pass + at;
      for (int j = 0; j < lines; ++j) _mm_prefetch(pf + 64 * j, _MM_HINT_T1);
    }
  }
};

// y[r - r0] = row r . the activation at x, rows in lanes: passes of 16 rows in 4 groups
// of 4 (Rows4), whose per-block sums and scales are transposed so that one FMA per block
// serves all 16 rows. (With one 4-row group at a time, the chain of 4 dependent FMAs per
// unit and their 128-bit extracts held q4_0 from L2 at 12.8 GB/s against 15.9 without.)
//
// Prefetch: while a pass computes unit u of its rows, unit u of the next pass's rows is
// prefetched into L2 (a pass ahead: enough to cover DRAM latency at any row length), one
// prefetch per whole 64 bytes of a unit; the hardware prefetcher takes the odd line left.
// A prefetch for every line touched, or a per-line loop, cost more than the decode's
// shuffles when the weights are already in L2; prefetching into L1 a fixed distance
// ahead went through other rows of the same pass and left rows unprefetched.
template <class T>
BRAID_VNNI void DecodeRows(const T& kt, const ActLayout& L, const uint8_t* W, size_t stride, int64_t r0, int64_t r1,
                           const char* x, float* y) {
  constexpr int kG = kPassGroups;
  const int64_t units = kt.k.Units();
  const int64_t unit_bytes = static_cast<int64_t>(stride) / (units > 0 ? units : 1);
  for (int64_t r = r0; r < r1; r += kPassRows) {
    const Pass pass(W, stride, r, r1);
    __m512 acc = _mm512_setzero_ps();  // lane 4g + i: row r + 4g + i
    for (int64_t u = 0; u < units; ++u) {
      const char* rec = x + u * static_cast<int64_t>(L.rec);
      const __m512 dx = kt.Dx(L, rec);
      __m512 f[kG], sc[kG];
      for (int g = 0; g < kG; ++g) {
        pass.Prefetch(g, u * unit_bytes, (T::kUnitBytes + 16) / 64);
        __m512i isum;
        __m512 dw;
        kt.Rows4(pass.p[g], u, rec, isum, dw);
        f[g] = _mm512_cvtepi32_ps(isum);
        sc[g] = _mm512_mul_ps(dw, dx);
      }
      __m512 fb[4], sb[4];
      Transpose4x128(f, fb);
      Transpose4x128(sc, sb);
      for (int b = 0; b < 4; ++b) acc = _mm512_fmadd_ps(fb[b], sb[b], acc);
    }
    const int64_t rows = std::min<int64_t>(kPassRows, r1 - r);
    _mm512_mask_storeu_ps(y + (r - r0), static_cast<__mmask16>((1u << rows) - 1), acc);
  }
}

// ---------------------------------------------------------------- prefill

// n tokens in passes of at most kMaxPass: prefill(t0, m) takes whole groups of 16 plus a
// padded last group if it has enough tokens to pay for itself; decode(t) takes the
// leftovers one by one.
template <class PrefillFn, class DecodeFn>
BRAID_VNNI inline void ForPasses(int64_t n, const PrefillFn& prefill, const DecodeFn& decode) {
  int64_t t0 = 0;
  while (t0 < n) {
    const int64_t m = std::min<int64_t>(kMaxPass, n - t0);
    const int64_t take = m % kGroup >= kMinGroup ? m : m - m % kGroup;
    if (take > 0) {
      prefill(t0, take);
      t0 += take;
    } else {
      for (int64_t t = 0; t < m; ++t) decode(t0 + t);
      t0 += m;
    }
  }
}

// The cache lines of the rows after the tile [r, r + R) (up to R of them, clamped to
// r1), which the tile's first group prefetches while it computes; *next: the first.
BRAID_VNNI inline int64_t NextTileLines(int64_t r, int64_t r1, int R, size_t stride, int64_t* next) {
  *next = std::min<int64_t>(r + R, r1);
  return std::min<int64_t>(R, r1 - *next) * static_cast<int64_t>(stride) / 64;
}

// Writes a tile's results: acc[i] lane t = row i . token t, for rows < rows and tokens <
// tokens, into y (token t at y + t * ldy, row i at + i).
template <int R>
BRAID_VNNI HWY_INLINE void StoreTile(const __m512 (&acc)[R], int rows, int64_t tokens, float* y, size_t ldy) {
  alignas(64) float out[R][kGroup];
  for (int i = 0; i < R; ++i) _mm512_store_ps(out[i], acc[i]);
  for (int64_t t = 0; t < tokens; ++t) {
    float* yt = y + t * static_cast<int64_t>(ldy);
    for (int i = 0; i < rows; ++i) yt[i] = out[i][t];
  }
}

// Per-thread buffers, grown as needed and kept (cache-line aligned).
struct Scratch {
  AlignedVector<char> panel;     // groups x units x kUnitPanel
  AlignedVector<int8_t> w;       // [unit][row of tile][128]: signed weights, natural order
  AlignedVector<int32_t> corr;   // [block][row of tile]: -128 * sum of the block's weights
  AlignedVector<float> dw;       // [block][row of tile]: the block's scale
};

inline Scratch& ThreadScratch() {
  static thread_local Scratch s;
  return s;
}

// The activation panel of m <= kMaxPass tokens (records at x, xq_stride apart): per group
// of 16 tokens and unit, 32 vectors whose lane t holds 4 bytes (x + 128) of token t, in
// the slots of T::Slot, then 4 vectors of the unit's block scales (lane t: token t's).
template <class T>
BRAID_VNNI void BuildPanel(const ActLayout& L, const char* x, size_t xq_stride, int64_t m, char* panel) {
  const int64_t units = L.units;
  const int64_t groups = (m + kGroup - 1) / kGroup;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t t0 = g * kGroup, valid = std::min<int64_t>(kGroup, m - t0);
    for (int64_t u = 0; u < units; ++u) {
      char* out = panel + (g * units + u) * kUnitPanel;
      for (int h = 0; h < 2; ++h) {
        __m512i r[16], c[16];
        for (int t = 0; t < kGroup; ++t) {
          r[t] = t < valid ? _mm512_loadu_si512(x + (t0 + t) * static_cast<int64_t>(xq_stride) + u * static_cast<int64_t>(L.rec) + L.qs + 64 * h)
                           : _mm512_setzero_si512();
        }
        Transpose16(r, c);
        for (int d = 0; d < 16; ++d) _mm512_store_si512(out + T::Slot(h, d) * 64, _mm512_xor_si512(c[d], flip));
      }
      float* dx = reinterpret_cast<float*>(out + 32 * 64);
      for (int j = 0; j < 4; ++j) {
        for (int t = 0; t < kGroup; ++t) {
          float v = 0.0f;
          if (t < valid) std::memcpy(&v, x + (t0 + t) * static_cast<int64_t>(xq_stride) + u * static_cast<int64_t>(L.rec) + L.dx + 4 * j, 4);
          dx[16 * j + t] = v;
        }
      }
    }
  }
}

// kRows rows (scratch of Prepare) x one group of the panel: acc[i] lane t = row i . token t.
// kPrefetch (a tile's first group): also prefetches pf_lines cache lines from pf, spread
// over the blocks: the next tile's weights, which Prepare would otherwise wait for from
// DRAM with nothing to overlap. A compile-time switch, so the other groups' loop has no
// prefetch code at all: with pf_lines = 0 passed at run time, GCC compiled the loop with
// extra register copies when the caller computed pf_lines outside its group loop, and
// q4_0 / q8_0 prefill ran 1.45x slower (micro_quant BM_Matmul).
// The tile's scratch is w, corr, dw (Scratch's layouts, from the tile's first row).
template <bool kPrefetch>
BRAID_VNNI HWY_INLINE void GroupTile(const int8_t* w, const int32_t* corr, const float* dw, int64_t nb,
                                     const char* group, const char* pf, int64_t pf_lines, __m512 (&acc)[kRows]) {
  const int64_t pf_per_block = kPrefetch && nb > 0 ? (pf_lines + nb - 1) / nb : 0;
  for (int i = 0; i < kRows; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const char* pb = group + (b / 4) * kUnitPanel;
    const int j = static_cast<int>(b % 4);
    if constexpr (kPrefetch) {
      for (int64_t l = b * pf_per_block; l < std::min(pf_lines, (b + 1) * pf_per_block); ++l)
        _mm_prefetch(pf + 64 * l, _MM_HINT_T0);
    }
    __m512i xv[8];
    for (int g = 0; g < 8; ++g) xv[g] = _mm512_load_si512(pb + (8 * j + g) * 64);
    const __m512 dx = _mm512_load_ps(reinterpret_cast<const float*>(pb + 32 * 64) + 16 * j);
    const int8_t* wb = w + (b / 4) * (kRows * 128) + j * 32;
    // Eight independent vpdpbusd chains (one per row) interleaved: one row's chain of 8
    // alone would wait on vpdpbusd's latency.
    __m512i v[kRows];
    for (int i = 0; i < kRows; ++i) v[i] = _mm512_set1_epi32(corr[b * kRows + i]);
    // Unrolled: as a loop, GCC copied all eight chains between registers every step
    // (vpdpbusd overwrites its accumulator), and q4_0 / q8_0 prefill ran 1.45x slower
    // (micro_quant BM_Matmul) depending on unrelated code around the call.
#pragma GCC unroll 8
    for (int g = 0; g < 8; ++g) {
#pragma GCC unroll 8
      for (int i = 0; i < kRows; ++i) {
        int32_t q;
        std::memcpy(&q, wb + 128 * i + 4 * g, 4);
        v[i] = _mm512_dpbusd_epi32(v[i], xv[g], _mm512_set1_epi32(q));
      }
    }
    for (int i = 0; i < kRows; ++i)
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v[i]), _mm512_mul_ps(dx, _mm512_set1_ps(dw[b * kRows + i])), acc[i]);
  }
}

// Rows [r, r + kRows) (clamped to r1) into the scratch: weights, corrections, scales.
template <class T>
BRAID_VNNI void Prepare(const T& kt, const uint8_t* W, size_t stride, int64_t r, int64_t r1, int64_t units, Scratch& s) {
  static_assert(kRows == 8, "the transposes below interleave two groups of four rows");
  const uint8_t* rows[kRows];
  for (int i = 0; i < kRows; ++i) rows[i] = W + std::min(r + i, r1 - 1) * stride;
  const __m512i ones = _mm512_set1_epi8(1);
  // Lane l of the [block j][row i] layout (8 rows per block, two blocks per vector) takes
  // lane 4j + i of the rows 0..3 vector or lane 4j + i - 4 of the rows 4..7 one.
  alignas(64) int32_t lo_idx[16], hi_idx[16];
  for (int l = 0; l < 16; ++l) {
    for (int half = 0; half < 2; ++half) {
      const int j = l / 8 + 2 * half, i = l % 8;
      (half == 0 ? lo_idx : hi_idx)[l] = i < 4 ? 4 * j + i : 16 + 4 * j + i - 4;
    }
  }
  const __m512i ilo = _mm512_load_si512(lo_idx), ihi = _mm512_load_si512(hi_idx);
  for (int64_t u = 0; u < units; ++u) {
    __m512i sums[kRows];
    __m512 dws[kRows];
    int8_t* wu = s.w.data() + u * (kRows * 128);
    for (int i = 0; i < kRows; ++i) {
      __m512i w[2];
      kt.Weights(rows[i], u, w, dws[i]);
      _mm512_store_si512(wu + 128 * i, w[0]);
      _mm512_store_si512(wu + 128 * i + 64, w[1]);
      sums[i] = PairsToQuads(_mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, w[0]),
                             _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, w[1]));
    }
    const __m512i z0 = TransposeReduce(sums[0], sums[1], sums[2], sums[3]);
    const __m512i z1 = TransposeReduce(sums[4], sums[5], sums[6], sums[7]);
    const __m512 d0 = BlendRows({dws[0], dws[1], dws[2], dws[3]});
    const __m512 d1 = BlendRows({dws[4], dws[5], dws[6], dws[7]});
    int32_t* cu = s.corr.data() + u * (4 * kRows);
    float* du = s.dw.data() + u * (4 * kRows);
    const __m512i zero = _mm512_setzero_si512();
    _mm512_store_si512(cu, _mm512_sub_epi32(zero, _mm512_slli_epi32(_mm512_permutex2var_epi32(z0, ilo, z1), 7)));
    _mm512_store_si512(cu + 16, _mm512_sub_epi32(zero, _mm512_slli_epi32(_mm512_permutex2var_epi32(z0, ihi, z1), 7)));
    _mm512_store_ps(du, _mm512_permutex2var_ps(d0, ilo, d1));
    _mm512_store_ps(du + 16, _mm512_permutex2var_ps(d0, ihi, d1));
  }
}

// m tokens (a multiple of kGroup, or the pass's padded last group) x rows [r0, r1).
template <class T>
BRAID_VNNI void Prefill(const T& kt, const ActLayout& L, const uint8_t* W, size_t stride, int64_t r0, int64_t r1,
                        const char* x, size_t xq_stride, int64_t m, float* y, size_t ldy) {
  Scratch& s = ThreadScratch();
  const int64_t units = L.units, nb = L.nb;
  const int64_t groups = (m + kGroup - 1) / kGroup;
  s.panel.resize(static_cast<size_t>(groups * units * kUnitPanel));
  s.w.resize(static_cast<size_t>(units * 4 * kRows * 32));
  s.corr.resize(static_cast<size_t>(units * 4 * kRows));
  s.dw.resize(static_cast<size_t>(units * 4 * kRows));
  BuildPanel<T>(L, x, xq_stride, m, s.panel.data());
  for (int64_t r = r0; r < r1; r += kRows) {
    Prepare(kt, W, stride, r, r1, units, s);
    const int rows = static_cast<int>(std::min<int64_t>(kRows, r1 - r));
    int64_t next;
    const int64_t next_lines = NextTileLines(r, r1, kRows, stride, &next);
    for (int64_t g = 0; g < groups; ++g) {
      __m512 acc[kRows];
      const char* group = s.panel.data() + g * units * kUnitPanel;
      if (g == 0) {
        GroupTile<true>(s.w.data(), s.corr.data(), s.dw.data(), nb, group,
                        reinterpret_cast<const char*>(W + next * stride), next_lines, acc);
      } else {
        GroupTile<false>(s.w.data(), s.corr.data(), s.dw.data(), nb, group, nullptr, 0, acc);
      }
      StoreTile(acc, rows, std::min<int64_t>(kGroup, m - g * kGroup),
                y + g * kGroup * static_cast<int64_t>(ldy) + (r - r0), ldy);
    }
  }
}

// Rows [r0, r1) x n activations. Returns false if the activation layout is not the one
// T's kernels read (the caller falls back).
template <class T>
BRAID_VNNI bool Run(T& kt, const ActLayout& L, const uint8_t* W, size_t stride, int64_t r0, int64_t r1,
                    const void* xq, size_t xq_stride, int64_t n, float* y, size_t ldy) {
  if (!T::K::Matches(L) || L.dx == 0) return false;
  kt.k.nb = L.nb;
  const char* x = static_cast<const char*>(xq);
  const int64_t xs = static_cast<int64_t>(xq_stride), ys = static_cast<int64_t>(ldy);
  ForPasses(
      n, [&](int64_t t0, int64_t m) { Prefill(kt, L, W, stride, r0, r1, x + t0 * xs, xq_stride, m, y + t0 * ys, ldy); },
      [&](int64_t t) { DecodeRows(kt, L, W, stride, r0, r1, x + t * xs, y + t * ys); });
  return true;
}

}  // namespace lanes
