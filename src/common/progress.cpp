#include "common/progress.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <sstream>

namespace mambavl {

namespace {
double steady_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}
}  // namespace

ProgressBar::ProgressBar(std::string label, int64_t total)
    : ProgressBar(std::move(label), total, Options{}) {}

ProgressBar::ProgressBar(std::string label, int64_t total, Options opt)
    : label_(std::move(label)), total_(total), opt_(std::move(opt)) {
  if (!opt_.out) opt_.mode = Mode::Off;
  if (opt_.mode == Mode::Auto) opt_.mode = isatty(fileno(opt_.out)) ? Mode::Tty : Mode::Lines;
  tty_ = opt_.mode == Mode::Tty;
  start_ = now();
}

ProgressBar::~ProgressBar() {
  try {
    finish();
  } catch (...) {
  }
}

double ProgressBar::now() const { return opt_.clock ? opt_.clock() : steady_seconds(); }

void ProgressBar::set_field(const std::string& key, const std::string& value) {
  for (auto& [k, v] : fields_) {
    if (k == key) {
      v = value;
      return;
    }
  }
  fields_.emplace_back(key, value);
}

void ProgressBar::set_field(const std::string& key, double value, int precision) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(precision);
  s << value;
  set_field(key, s.str());
}

double ProgressBar::elapsed() const { return std::max(0.0, now() - start_); }

double ProgressBar::rate() const {
  const double t = elapsed();
  return t > 0 ? static_cast<double>(done_) / t : 0.0;
}

double ProgressBar::eta() const {
  const double r = rate();
  if (total_ <= 0 || r <= 0) return -1;
  return static_cast<double>(std::max<int64_t>(0, total_ - done_)) / r;
}

std::string ProgressBar::format_duration(double seconds) {
  if (!(seconds >= 0) || !std::isfinite(seconds)) return "--:--";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%02lld:%02lld", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  return buf;
}

std::string ProgressBar::status_line() const {
  std::ostringstream s;
  s << label_ << " " << done_;
  if (total_ > 0) s << "/" << total_ << " " << (100 * std::min(done_, total_) / total_) << "%";
  const double r = rate();
  char buf[32];
  std::snprintf(buf, sizeof buf, r >= 100 ? "%.0f" : "%.1f", r);
  s << " " << buf << " " << opt_.unit << "/s elapsed " << format_duration(elapsed());
  if (total_ > 0) s << " eta " << format_duration(eta());
  for (const auto& [k, v] : fields_) s << " " << k << " " << v;
  return s.str();
}

void ProgressBar::draw(bool final) {
  if (opt_.mode == Mode::Off) return;
  const std::string line = status_line();
  if (tty_) {
    std::string bar;
    if (total_ > 0) {
      const size_t width = static_cast<size_t>(std::max(opt_.width, 0));
      const size_t filled = std::min(
          width, static_cast<size_t>(static_cast<double>(std::clamp<int64_t>(done_, 0, total_)) /
                                     static_cast<double>(total_) * static_cast<double>(width)));
      bar.push_back('[');
      bar.append(filled, '#');
      bar.append(width - filled, '.');
      bar.append("] ");
    }
    // \r, the line, erase to the end of the line.
    std::fprintf(opt_.out, "\r%s%s\x1b[K%s", bar.c_str(), line.c_str(), final ? "\n" : "");
  } else {
    std::fprintf(opt_.out, "%s\n", line.c_str());
  }
  std::fflush(opt_.out);
}

void ProgressBar::advance(int64_t n) {
  if (finished_) return;
  done_ += n;
  if (opt_.mode == Mode::Off) return;
  const double t = now();
  if (tty_) {
    if (t - last_draw_ >= opt_.min_redraw_seconds) {
      last_draw_ = t;
      draw(false);
    }
    return;
  }
  // Lines: one line each time a new 10 % step is reached (unknown total: every 10 s); the last
  // step is left to finish().
  if (total_ > 0) {
    const int decile = static_cast<int>(10 * std::min(done_, total_) / total_);
    if (decile > last_decile_ && done_ < total_) {
      last_decile_ = decile;
      draw(false);
    }
  } else if (t - last_draw_ >= 10.0) {
    last_draw_ = t;
    draw(false);
  }
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  draw(true);
}

}  // namespace mambavl
