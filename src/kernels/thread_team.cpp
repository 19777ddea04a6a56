#include "kernels/thread_team.h"

#include <ATen/Parallel.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>

#include "common/parse.h"

namespace mambavl::kernels {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Pause iterations before sleeping (~10-40 us: a phase of a decode step is longer, a wait for a
// thread without a core far longer).
constexpr int kSpin = 1000;

// Returns once `a` != v: spins, then sleeps on the futex. `sleepers` counts the sleepers so that
// wake() makes a system call only when someone sleeps (sequentially consistent increments and
// loads on both sides: either the waker sees the sleeper, or the sleeper sees the new value).
void wait_while_equal(std::atomic<uint32_t>& a, uint32_t v, std::atomic<uint32_t>& sleepers) {
  for (int i = 0; i < kSpin; ++i) {
    if (a.load(std::memory_order_acquire) != v) return;
    cpu_relax();
  }
  sleepers.fetch_add(1);
  while (a.load() == v)
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&a), FUTEX_WAIT_PRIVATE, v, nullptr, nullptr, 0);
  sleepers.fetch_sub(1);
}

void wake(std::atomic<uint32_t>& a, std::atomic<uint32_t>& sleepers) {
  if (sleepers.load() > 0)
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&a), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
            nullptr, 0);
}

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t) &&
              std::atomic<uint32_t>::is_always_lock_free);

}  // namespace

int ThreadTeam::Member::size() const { return team_->n_; }

void ThreadTeam::Member::barrier() { team_->barrier_wait(); }

std::atomic<int64_t>& ThreadTeam::Member::begin_phase() {
  // Three counters in turn: phase k uses k % 3; member 0 clears the one of phase k + 1 (last used
  // by phase k - 2, which every member has left) before the barrier that ends phase k.
  if (tid_ == 0) team_->counters_[(phase_ + 1) % 3].store(0, std::memory_order_relaxed);
  return team_->counters_[phase_++ % 3];
}

ThreadTeam::ThreadTeam(int threads) : n_(std::max(1, threads)) {
  for (auto& c : counters_) c.store(0);
  for (int t = 1; t < n_; ++t) threads_.emplace_back([this, t] { worker(t); });
}

ThreadTeam::~ThreadTeam() {
  stop_.store(true);
  job_gen_.fetch_add(1);
  wake(job_gen_, sleepers_);
  for (auto& t : threads_) t.join();
}

void ThreadTeam::barrier_wait() {
  if (n_ == 1) return;
  const uint32_t gen = bar_gen_.load(std::memory_order_acquire);
  if (bar_count_.fetch_add(1, std::memory_order_acq_rel) + 1 == static_cast<uint32_t>(n_)) {
    bar_count_.store(0, std::memory_order_relaxed);
    bar_gen_.fetch_add(1);
    wake(bar_gen_, sleepers_);
    return;
  }
  wait_while_equal(bar_gen_, gen, sleepers_);
}

void ThreadTeam::run(const std::function<void(Member&)>& f) {
  for (auto& c : counters_) c.store(0, std::memory_order_relaxed);
  if (n_ == 1) {
    Member m(this, 0);
    f(m);
    return;
  }
  job_ = &f;
  done_.store(0, std::memory_order_relaxed);
  job_gen_.fetch_add(1);  // publishes job_ and the counters
  wake(job_gen_, sleepers_);
  Member m(this, 0);
  f(m);
  for (uint32_t d; (d = done_.load()) != static_cast<uint32_t>(n_ - 1);)
    wait_while_equal(done_, d, sleepers_);
}

void ThreadTeam::worker(int tid) {
  uint32_t seen = 0;
  for (;;) {
    wait_while_equal(job_gen_, seen, sleepers_);
    seen = job_gen_.load();
    if (stop_.load()) return;
    Member m(this, tid);
    (*job_)(m);
    done_.fetch_add(1);
    wake(done_, sleepers_);
  }
}

DecodeTeamLease decode_team() {
  static std::mutex mu;
  static std::unique_ptr<ThreadTeam> team;
  std::unique_lock<std::mutex> lock(mu);
  int n = at::get_num_threads();
  if (const char* e = std::getenv("MAMBAVL_DECODE_THREADS"); e && *e)
    n = static_cast<int>(parse_int64(e, "MAMBAVL_DECODE_THREADS", 1, 1024));
  if (!team || team->size() != n) {
    team.reset();
    team = std::make_unique<ThreadTeam>(n);
  }
  return {std::move(lock), team.get()};
}

}  // namespace mambavl::kernels
