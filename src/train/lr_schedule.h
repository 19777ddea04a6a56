// Learning-rate schedules for training, evaluated per optimizer step.
#pragma once
#include <cstdint>

namespace mambavl::train {

// Linear warmup then cosine decay (timm's CosineLRScheduler with warmup_prefix, per step):
//   step < warmup:  lr = base * (step + 1) / warmup
//   after:          lr = min + (base - min) * (1 + cos(pi * t)) / 2,
//                   t = (step - warmup) / max(1, total - warmup) clamped to [0, 1],
//                   min = base * min_lr_ratio.
// `step` counts from 0; total_steps is the whole run including warmup.
struct WarmupCosineSchedule {
  double base_lr = 1e-3;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_lr_ratio = 0.0;

  double lr_at(int64_t step) const;
};

}  // namespace mambavl::train
