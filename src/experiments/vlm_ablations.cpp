#include "common/error.h"
#include "experiments/experiment.h"

// Placeholders until the vision-language experiments land (next commit).
namespace mambavl::experiments {
void run_coarse_fine(const ExperimentOptions&) { MVL_FAIL("experiment coarse-fine: not built yet"); }
void run_task_aware(const ExperimentOptions&) { MVL_FAIL("experiment task-aware: not built yet"); }
void run_resolution(const ExperimentOptions&) { MVL_FAIL("experiment resolution: not built yet"); }
void run_connectors(const ExperimentOptions&) { MVL_FAIL("experiment connectors: not built yet"); }
}  // namespace mambavl::experiments
