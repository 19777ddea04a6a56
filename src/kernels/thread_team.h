// A persistent team of threads for the decode step: one parallel region per token (not one per
// matrix-vector product, whose thread start / stop cost ~13 % of a step through OpenMP), phases
// separated by barriers, and work shared in chunks taken from a counter, so a thread that loses
// its core to another process (a busy machine) slows the step by its share and no more: the
// others take its chunks.
//
// Waiting (barriers, and workers between steps) spins briefly with `pause`, then sleeps on a futex:
// a waiting thread never holds a core another process needs for long, which is what makes 2-thread
// OpenMP decode collapse to a few % of its speed beside a busy process (threads spinning at
// barriers while their partner waits for a core).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace mambavl::kernels {

class ThreadTeam {
 public:
  // One team member's view inside run(): its id (0 = the calling thread) and the phase helpers.
  class Member {
   public:
    int id() const { return tid_; }
    int size() const;
    // Calls f(chunk) for chunks of [0, n) taken from the phase's counter by whichever member is
    // free, then waits at a barrier for the whole team. Every member must call it (the same
    // sequence of phases on every member).
    template <class F>
    void for_chunks(int64_t n, F&& f) {
      std::atomic<int64_t>& c = begin_phase();
      for (int64_t i; (i = c.fetch_add(1, std::memory_order_relaxed)) < n;) f(i);
      barrier();
    }
    // Member 0 runs f; the others wait for it.
    template <class F>
    void single(F&& f) {
      begin_phase();
      if (tid_ == 0) f();
      barrier();
    }
    void barrier();

   private:
    friend class ThreadTeam;
    Member(ThreadTeam* t, int tid) : team_(t), tid_(tid) {}
    std::atomic<int64_t>& begin_phase();
    ThreadTeam* team_;
    int tid_;
    uint32_t phase_ = 0;
  };

  explicit ThreadTeam(int threads);
  ~ThreadTeam();
  ThreadTeam(const ThreadTeam&) = delete;
  ThreadTeam& operator=(const ThreadTeam&) = delete;

  int size() const { return n_; }
  // Runs f on every member (the caller is member 0) and returns when all have finished. Not
  // reentrant: one run at a time per team (decode_team() is guarded by a mutex).
  void run(const std::function<void(Member&)>& f);

 private:
  void worker(int tid);
  void barrier_wait();
  int n_;
  std::vector<std::thread> threads_;
  const std::function<void(Member&)>* job_ = nullptr;
  alignas(64) std::atomic<uint32_t> job_gen_{0};
  alignas(64) std::atomic<uint32_t> done_{0};
  alignas(64) std::atomic<uint32_t> bar_count_{0};
  alignas(64) std::atomic<uint32_t> bar_gen_{0};
  alignas(64) std::atomic<int64_t> counters_[3];
  std::atomic<bool> stop_{false};
  std::atomic<uint32_t> sleepers_{0};
};

// The process-wide decode team, sized at::get_num_threads() (made again when that changes), and
// the lock that serialises its use. Threads: MAMBAVL_DECODE_THREADS overrides the size.
struct DecodeTeamLease {
  std::unique_lock<std::mutex> lock;
  ThreadTeam* team;
};
DecodeTeamLease decode_team();

}  // namespace mambavl::kernels
