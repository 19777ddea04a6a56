// Dev-only driver for dev/stress_tokenizer.py: reads {"texts": [...], "ids": [[...]]} and prints
// {"enc": encode(text) for each text, "dec": decode(ids) for each id list} as JSON.
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "io/tokenizer.h"
int main(int argc, char** argv) {
  auto t = mambavl::io::Tokenizer::from_file(argv[1]);
  std::ifstream f(argv[2]);
  auto j = nlohmann::json::parse(f);
  nlohmann::json out = nlohmann::json::array();
  for (auto& s : j["texts"]) out.push_back(t.encode(s.get<std::string>()));
  nlohmann::json dec = nlohmann::json::array();
  for (auto& ids : j["ids"]) dec.push_back(t.decode(ids.get<std::vector<int64_t>>()));
  std::cout << nlohmann::json{{"enc", out}, {"dec", dec}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::strict);
}
