// RMSNorm and LayerNorm, forward and backward. Row statistics are summed in double:
// rows are short (the model width), and it keeps the saved rstd close to PyTorch's.
// The backward runs twice over the rows: once split by rows for dx, once split by
// columns for the weight and bias gradients (sums over all rows), so no two threads
// write the same element.
#include <algorithm>
#include <cmath>

#include "tune/kernels.h"

namespace braid::tune {

void rmsnorm_forward(ThreadPool& pool, float* out, float* rstd, const float* x, const float* w, int64_t n,
                     int64_t c, float eps) {
  parallel_for(pool, n, 6 * c, [&](int64_t begin, int64_t end, int) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = x + r * c;
      double ss = 0.0;
      for (int64_t i = 0; i < c; ++i) ss += double(xr[i]) * xr[i];
      const float s = static_cast<float>(1.0 / std::sqrt(ss / double(c) + eps));
      rstd[r] = s;
      float* o = out + r * c;
      for (int64_t i = 0; i < c; ++i) o[i] = (xr[i] * s) * w[i];
    }
  });
}

void rmsnorm_backward(ThreadPool& pool, float* dx, float* dw, const float* dout, const float* x,
                      const float* w, const float* rstd, int64_t n, int64_t c) {
  if (dx) {
    // y = x * s * w with s = (mean(x^2) + eps)^-1/2:
    // dx = s * (g*w) - x * s^3 / c * sum(g*w*x).
    parallel_for(pool, n, 6 * c, [&](int64_t begin, int64_t end, int) {
      for (int64_t r = begin; r < end; ++r) {
        const float* xr = x + r * c;
        const float* g = dout + r * c;
        double dot = 0.0;
        for (int64_t i = 0; i < c; ++i) dot += double(g[i]) * w[i] * xr[i];
        const float s = rstd[r];
        const float k = static_cast<float>(dot * double(s) * s * s / double(c));
        float* d = dx + r * c;
        for (int64_t i = 0; i < c; ++i) d[i] += s * g[i] * w[i] - k * xr[i];
      }
    });
  }
  if (dw) {
    parallel_for(pool, c, 4 * n, [&](int64_t begin, int64_t end, int) {
      for (int64_t r = 0; r < n; ++r) {
        const float* xr = x + r * c;
        const float* g = dout + r * c;
        const float s = rstd[r];
        for (int64_t i = begin; i < end; ++i) dw[i] += g[i] * (xr[i] * s);
      }
    });
  }
}

void layernorm_forward(ThreadPool& pool, float* out, float* mean, float* rstd, const float* x, const float* w,
                       const float* b, int64_t n, int64_t c, float eps) {
  parallel_for(pool, n, 6 * c, [&](int64_t begin, int64_t end, int) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = x + r * c;
      double sum = 0.0;
      for (int64_t i = 0; i < c; ++i) sum += xr[i];
      const double mu = sum / double(c);
      double var = 0.0;
      for (int64_t i = 0; i < c; ++i) var += (xr[i] - mu) * (xr[i] - mu);
      const float m = static_cast<float>(mu);
      const float s = static_cast<float>(1.0 / std::sqrt(var / double(c) + eps));
      mean[r] = m;
      rstd[r] = s;
      float* o = out + r * c;
      for (int64_t i = 0; i < c; ++i) o[i] = (xr[i] - m) * s * w[i] + b[i];
    }
  });
}

void layernorm_backward(ThreadPool& pool, float* dx, float* dw, float* db, const float* dout, const float* x,
                        const float* w, const float* mean, const float* rstd, int64_t n, int64_t c) {
  if (dx) {
    // With xhat = (x - mean) * s and gw = g * w:
    // dx = s * (gw - mean(gw) - xhat * mean(gw * xhat)).
    parallel_for(pool, n, 6 * c, [&](int64_t begin, int64_t end, int) {
      for (int64_t r = begin; r < end; ++r) {
        const float* xr = x + r * c;
        const float* g = dout + r * c;
        const float m = mean[r], s = rstd[r];
        double sum_gw = 0.0, sum_gwx = 0.0;
        for (int64_t i = 0; i < c; ++i) {
          const double gw = double(g[i]) * w[i];
          sum_gw += gw;
          sum_gwx += gw * ((xr[i] - m) * s);
        }
        const float mean_gw = static_cast<float>(sum_gw / double(c));
        const float mean_gwx = static_cast<float>(sum_gwx / double(c));
        float* d = dx + r * c;
        for (int64_t i = 0; i < c; ++i) {
          const float xhat = (xr[i] - m) * s;
          d[i] += s * (g[i] * w[i] - mean_gw - xhat * mean_gwx);
        }
      }
    });
  }
  if (dw || db) {
    parallel_for(pool, c, 4 * n, [&](int64_t begin, int64_t end, int) {
      for (int64_t r = 0; r < n; ++r) {
        const float* xr = x + r * c;
        const float* g = dout + r * c;
        const float m = mean[r], s = rstd[r];
        for (int64_t i = begin; i < end; ++i) {
          if (dw) dw[i] += g[i] * ((xr[i] - m) * s);
          if (db) db[i] += g[i];
        }
      }
    });
  }
}

}  // namespace braid::tune
