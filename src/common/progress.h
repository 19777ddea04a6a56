// A terminal progress bar for long work (training epochs, evaluation, downloads of data):
// item count, percentage, rate, elapsed time and ETA, plus custom fields such as the loss.
// On a TTY it redraws one line in place (carriage return); otherwise (a log file, a pipe, a test)
// it prints plain lines, one every 10 % of the total and one at the end, so logs stay readable.
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace mambavl {

class ProgressBar {
 public:
  enum class Mode { Auto, Tty, Lines, Off };
  struct Options {
    std::string unit = "it";  // "img", "batch", ...
    Mode mode = Mode::Auto;   // Auto: Tty when `out` is a terminal, Lines otherwise
    FILE* out = stderr;
    int width = 24;  // bar cells (Tty mode)
    // Seconds since an arbitrary origin; default: a steady clock. Tests inject a fake clock.
    std::function<double()> clock{};
    double min_redraw_seconds = 0.1;  // Tty mode: redraw at most this often (and at the end)
  };

  // `total` <= 0: unknown total (no percentage / ETA; Lines mode prints every `total`-free 10 s).
  ProgressBar(std::string label, int64_t total, Options opt);
  ProgressBar(std::string label, int64_t total);
  ~ProgressBar();  // finish()es if needed
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // A custom field shown after the standard ones, in insertion order ("loss 2.301").
  void set_field(const std::string& key, const std::string& value);
  void set_field(const std::string& key, double value, int precision = 4);
  // Counts `n` more items done and redraws when due.
  void advance(int64_t n = 1);
  // Draws the final state and ends the line. Idempotent.
  void finish();

  int64_t done() const { return done_; }
  int64_t total() const { return total_; }
  double elapsed() const;
  double rate() const;  // items per second so far (0 before any time has passed)
  // Seconds left at the current rate; negative when unknown.
  double eta() const;
  // The current status line without the bar or any terminal control characters, e.g.
  // "train 40/100 40% 12.5 img/s elapsed 00:03 eta 00:05 loss 2.3010".
  std::string status_line() const;

  // "00:07", "01:02:03".
  static std::string format_duration(double seconds);

 private:
  void draw(bool final);
  double now() const;

  std::string label_;
  int64_t total_, done_ = 0;
  Options opt_;
  bool tty_ = false, finished_ = false;
  double start_ = 0, last_draw_ = -1e300;
  int last_decile_ = 0;
  std::vector<std::pair<std::string, std::string>> fields_;
};

}  // namespace mambavl
