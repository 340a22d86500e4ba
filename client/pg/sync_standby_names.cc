// synchronous_standby_names: the server's syncrep scanner and grammar, as far as matching a
// name needs them.
#include "client/pg/sync_standby_names.h"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"

namespace ferry::client::pg {

namespace {

// A token as the server's syncrep scanner makes it: punctuation, a "quoted" name ("" is a
// quote) or a bare word.
struct Token {
  std::string text;
  bool quoted = false;
};

bool IsPunctuation(char c) { return c == ',' || c == '(' || c == ')'; }

// The tokens of `setting`; nullopt when a quoted name is not terminated (unparseable).
std::optional<std::vector<Token>> Tokenize(absl::string_view setting) {
  std::vector<Token> tokens;
  for (size_t i = 0; i < setting.size();) {
    const char c = setting[i];
    if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (IsPunctuation(c)) {
      tokens.push_back({std::string(1, c)});
      ++i;
    } else if (c == '"') {
      Token t{"", true};
      for (++i;; ++i) {
        if (i >= setting.size()) return std::nullopt;
        if (setting[i] != '"') {
          t.text.push_back(setting[i]);
        } else if (i + 1 < setting.size() && setting[i + 1] == '"') {
          t.text.push_back('"');
          ++i;
        } else {
          ++i;
          break;
        }
      }
      tokens.push_back(std::move(t));
    } else {
      Token t;
      while (i < setting.size() && !absl::ascii_isspace(static_cast<unsigned char>(setting[i])) &&
             !IsPunctuation(setting[i]) && setting[i] != '"') {
        t.text.push_back(setting[i++]);
      }
      tokens.push_back(std::move(t));
    }
  }
  return tokens;
}

}  // namespace

bool NamesSynchronousStandby(absl::string_view setting, absl::string_view application_name) {
  // The server compares the name as it keeps it: every byte outside printable ASCII made a
  // '?' (PostgreSQL 15's check_application_name; 16 writes \xNN instead).
  std::string name(application_name);
  for (char& c : name) {
    if (c < 32 || c > 126) c = '?';
  }
  const std::optional<std::vector<Token>> scanned = Tokenize(setting);
  if (!scanned.has_value()) return true;  // unterminated: unparseable
  const std::vector<Token>& tokens = *scanned;
  if (tokens.empty()) return false;  // '' : no synchronous standby at all
  auto word = [&](size_t i, absl::string_view w) {
    return i < tokens.size() && !tokens[i].quoted && absl::EqualsIgnoreCase(tokens[i].text, w);
  };
  auto number = [&](size_t i) {
    return i < tokens.size() && !tokens[i].quoted && !tokens[i].text.empty() &&
           std::all_of(tokens[i].text.begin(), tokens[i].text.end(), [](char d) { return absl::ascii_isdigit(d); });
  };
  // `[FIRST|ANY] n ( list )` or a bare list.
  size_t begin = 0, end = tokens.size();
  const size_t n_at = word(0, "first") || word(0, "any") ? 1 : 0;
  if (number(n_at) && word(n_at + 1, "(")) {
    if (!word(end - 1, ")")) return true;
    begin = n_at + 2;
    --end;
  }
  // names separated by commas
  for (size_t i = begin; i < end; i += 2) {
    if ((!tokens[i].quoted && (tokens[i].text == "," || tokens[i].text == "(" || tokens[i].text == ")")) ||
        (i + 1 < end && !word(i + 1, ","))) {
      return true;  // unparseable
    }
    if (tokens[i].text == "*" || absl::EqualsIgnoreCase(tokens[i].text, name)) return true;
  }
  return false;
}

}  // namespace ferry::client::pg
