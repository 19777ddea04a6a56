#include "train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace mambavl::train {

double WarmupCosineSchedule::lr_at(int64_t step) const {
  step = std::max<int64_t>(step, 0);
  if (step < warmup_steps)
    return base_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  const double min_lr = base_lr * min_lr_ratio;
  const int64_t decay = std::max<int64_t>(1, total_steps - warmup_steps);
  const double t =
      std::clamp(static_cast<double>(step - warmup_steps) / static_cast<double>(decay), 0.0, 1.0);
  return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * t));
}

}  // namespace mambavl::train
