// The papers' claims (SPEC §4) checked against experiment results: each claim reads the
// results.json of the experiment that tests it and gets a verdict with the numbers behind it.
//
// Verdict rules (for a directional claim "A > B" on a metric with K seeds each):
//   supported      A's mean - std > B's mean + std  (the mean ± std intervals do not overlap, in
//                  the claimed direction)
//   not supported  the intervals do not overlap, in the other direction
//   inconclusive   the intervals overlap, or a side has one seed only (no spread to judge by)
//   not run        the experiment's results are not among the inputs
// Claims of the form "A ≈ B" (within a tolerance t) are supported when |mean A - mean B| <= t and
// std A + std B <= 2t (precise enough to show it), not supported when |mean A - mean B| -
// (std A + std B) > t, otherwise (and with one seed) inconclusive.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mambavl::experiments {

struct Claim {
  std::string id;          // "retrieval-transformer-fast", ...
  std::string source;      // the paper
  std::string statement;   // the claim in words
  std::string experiment;  // the experiment that tests it
  std::string verdict;     // "supported" | "not supported" | "inconclusive" | "not run"
  std::string evidence;    // the numbers, e.g. "mamba 0.62 ± 0.04 vs pythia 0.55 ± 0.03 (2 seeds)"
};

// Every claim, evaluated on the given results (the contents of results.json files; several
// experiments, any order; an experiment given twice: the last one counts).
std::vector<Claim> evaluate_claims(const std::vector<nlohmann::json>& results);

nlohmann::json claims_json(const std::vector<Claim>& claims);
// A plain-text table for the terminal: one claim per line with its verdict and evidence.
std::string claims_text(const std::vector<Claim>& claims);

}  // namespace mambavl::experiments
