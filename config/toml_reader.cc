// TableReader, SubTable and the non-ASCII check run before toml++ parses a config.
#include "config/toml_reader.h"

#include <string_view>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "config/config.h"
#include "pipeline/check.h"

namespace ferry::config {

absl::Status TableReader::Error(absl::string_view key, absl::string_view what) const {
  return absl::InvalidArgumentError(absl::StrCat(origin_, ": ", Qualified(key), ": ", what));
}

std::string TableReader::Qualified(absl::string_view key) const {
  return path_.empty() ? std::string(key) : absl::StrCat(path_, ".", key);
}

absl::Status TableReader::String(absl::string_view key, std::string* out, bool required) {
  seen_.insert(std::string(key));
  const toml::node* n = table_.get(std::string_view(key.data(), key.size()));
  if (n == nullptr) return required ? Error(key, "missing (required)") : absl::OkStatus();
  auto v = n->value<std::string>();
  if (!v.has_value()) return Error(key, "expected a string");
  *out = *v;
  return absl::OkStatus();
}

absl::Status TableReader::Bool(absl::string_view key, bool* out) {
  seen_.insert(std::string(key));
  const toml::node* n = table_.get(std::string_view(key.data(), key.size()));
  if (n == nullptr) return absl::OkStatus();
  auto v = n->value<bool>();
  if (!v.has_value() || !n->is_boolean()) return Error(key, "expected true or false");
  *out = *v;
  return absl::OkStatus();
}

absl::Status TableReader::Int(absl::string_view key, int64_t lo, int64_t hi, int64_t* out) {
  seen_.insert(std::string(key));
  const toml::node* n = table_.get(std::string_view(key.data(), key.size()));
  if (n == nullptr) return absl::OkStatus();
  auto v = n->value<int64_t>();
  if (!v.has_value() || !n->is_integer() || *v < lo || *v > hi) {
    return Error(key, absl::StrCat("expected an integer from ", lo, " to ", hi));
  }
  *out = *v;
  return absl::OkStatus();
}

absl::Status TableReader::Duration(absl::string_view key, absl::Duration* out) {
  std::string text;
  FERRY_RETURN_IF_ERROR(String(key, &text));
  if (text.empty()) return absl::OkStatus();
  auto d = ParseDuration(text);
  if (!d.ok()) return Error(key, d.status().message());
  *out = *d;
  return absl::OkStatus();
}

absl::Status TableReader::StringList(absl::string_view key, std::vector<std::string>* out) {
  seen_.insert(std::string(key));
  const toml::node* n = table_.get(std::string_view(key.data(), key.size()));
  if (n == nullptr) return absl::OkStatus();
  const toml::array* arr = n->as_array();
  if (arr == nullptr) return Error(key, "expected an array of strings");
  out->clear();
  for (const toml::node& e : *arr) {
    auto v = e.value<std::string>();
    if (!v.has_value()) return Error(key, "expected an array of strings");
    out->push_back(*v);
  }
  return absl::OkStatus();
}

absl::Status TableReader::CheckUnknown() const {
  for (const auto& [k, v] : table_) {
    if (seen_.count(std::string(k.str())) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          origin_, ": unknown key \"", Qualified(std::string(k.str())), "\""));
    }
  }
  return absl::OkStatus();
}

absl::Status SubTable(const toml::table& root, absl::string_view name, absl::string_view origin,
                      const toml::table** out) {
  *out = nullptr;
  const toml::node* n = root.get(std::string_view(name.data(), name.size()));
  if (n == nullptr) return absl::OkStatus();
  if (!n->is_table()) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": ", name, ": expected a table [", name, "]"));
  }
  *out = n->as_table();
  return absl::OkStatus();
}

namespace {

// A run of 3 to 5 quotes at i closes a multi-line string (up to two of them are its last
// characters); returns the index of the run's last closing quote.
size_t CloseMultiLine(absl::string_view text, size_t i) {
  size_t n = 3;
  while (n < 5 && i + n < text.size() && text[i + n] == text[i]) ++n;
  return i + n - 1;
}

// CheckAsciiOutsideStrings: a scan of the text that tracks whether each character is code, a
// bare key or value, a comment or inside a string. Each state's method reads the character
// at *i and may move *i past what it consumed (or back, to read a character again as code).
class AsciiScanner {
 public:
  AsciiScanner(absl::string_view text, absl::string_view origin) : text_(text), origin_(origin) {}

  absl::Status Scan();

 private:
  enum State { kCode, kBareKey, kBareValue, kComment, kBasic, kLiteral, kMultiBasic, kMultiLiteral };

  absl::Status Code(size_t* i);
  absl::Status BareKey(size_t* i);
  absl::Status BareValue(size_t* i);
  absl::Status BasicString(size_t* i);  // kBasic and kMultiBasic
  void Comment(size_t* i);
  void LiteralString(size_t* i);  // kLiteral and kMultiLiteral

  absl::Status Refuse(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(origin_, ":", line_, ": ", what));
  }
  bool At(size_t i, absl::string_view s) const { return absl::StartsWith(text_.substr(i), s); }
  bool NonAscii(size_t i) const { return i < text_.size() && static_cast<unsigned char>(text_[i]) >= 0x80; }
  bool Blank(size_t i) const {
    return i < text_.size() && absl::string_view(" \t\r\n").find(text_[i]) != absl::string_view::npos;
  }
  static bool KeyChar(char c) { return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; }
  // The token ended at *i: read that character again as code.
  void Reread(size_t* i) {
    state_ = kCode;
    line_ -= text_[*i] == '\n';
    --*i;
  }

  const absl::string_view text_;
  const absl::string_view origin_;
  State state_ = kCode;
  int line_ = 1;
  // Open brackets: 'a' an array, 't' an inline table, 'h' a [table] header. A bare token is a
  // value after '=' and inside arrays, a key anywhere else.
  std::string open_;
  bool expect_value_ = false;
};

absl::Status AsciiScanner::Scan() {
  // A UTF-8 byte order mark (some editors write one) is skipped, as toml++ skips it.
  const size_t first = absl::StartsWith(text_, "\xEF\xBB\xBF") ? 3 : 0;
  for (size_t i = first; i < text_.size(); ++i) {
    if (text_[i] == '\n') ++line_;
    switch (state_) {
      case kCode: FERRY_RETURN_IF_ERROR(Code(&i)); break;
      case kBareKey: FERRY_RETURN_IF_ERROR(BareKey(&i)); break;
      case kBareValue: FERRY_RETURN_IF_ERROR(BareValue(&i)); break;
      case kComment: Comment(&i); break;
      case kBasic:
      case kMultiBasic: FERRY_RETURN_IF_ERROR(BasicString(&i)); break;
      case kLiteral:
      case kMultiLiteral: LiteralString(&i); break;
    }
  }
  return absl::OkStatus();
}

absl::Status AsciiScanner::Code(size_t* i) {
  const char c = text_[*i];
  if (At(*i, "\"\"\"") || At(*i, "'''")) {
    state_ = c == '"' ? kMultiBasic : kMultiLiteral;
    *i += 2;
  } else if (c == '"' || c == '\'') {
    state_ = c == '"' ? kBasic : kLiteral;
  } else if (c == '#') {
    state_ = kComment;
  } else if (NonAscii(*i)) {
    return Refuse("a non-ASCII character outside a quoted string; quote the value");
  } else if (c == '=') {
    expect_value_ = true;
  } else if (c == '[') {
    open_.push_back(expect_value_ ? 'a' : 'h');
  } else if (c == '{') {
    open_.push_back('t');
    expect_value_ = false;
  } else if (c == ']' || c == '}') {
    if (!open_.empty()) open_.pop_back();
    expect_value_ = !open_.empty() && open_.back() == 'a';
  } else if (c == ',') {
    expect_value_ = !open_.empty() && open_.back() == 'a';
  } else if (c == '\n' && open_.empty()) {
    expect_value_ = false;
  } else if (!Blank(*i) && c != '.') {
    state_ = expect_value_ ? kBareValue : kBareKey;
  }
  return absl::OkStatus();
}

absl::Status AsciiScanner::BareKey(size_t* i) {
  if (NonAscii(*i)) return Refuse("a non-ASCII character in a bare key; quote the key");
  if (!KeyChar(text_[*i])) Reread(i);
  return absl::OkStatus();
}

absl::Status AsciiScanner::BareValue(size_t* i) {
  const char c = text_[*i];
  if (NonAscii(*i)) return Refuse("a non-ASCII character outside a quoted string; quote the value");
  if (Blank(*i) || c == ']' || c == '}' || c == ',' || c == '#') Reread(i);
  return absl::OkStatus();
}

void AsciiScanner::Comment(size_t* i) {
  if (text_[*i] == '\n') Reread(i);
}

absl::Status AsciiScanner::BasicString(size_t* i) {
  const char c = text_[*i];
  if (c == '\\') {
    size_t j = *i + 1;
    if (state_ == kMultiBasic) {
      for (; Blank(j); ++j) line_ += text_[j] == '\n';
    }
    if (NonAscii(j)) return Refuse("a non-ASCII character after a backslash; write it as \\uXXXX");
    if (j == *i + 1) {
      line_ += j < text_.size() && text_[j] == '\n';
      *i = j;  // the escaped character is content, whatever it is
    } else {
      *i = j - 1;  // after trimming, the next character is read as usual
    }
  } else if (state_ == kBasic && c == '\n') {
    Reread(i);
  } else if (state_ == kBasic && c == '"') {
    state_ = kCode;
  } else if (state_ == kMultiBasic && At(*i, "\"\"\"")) {
    state_ = kCode;
    *i = CloseMultiLine(text_, *i);
  }
  return absl::OkStatus();
}

void AsciiScanner::LiteralString(size_t* i) {
  if (state_ == kLiteral && text_[*i] == '\n') {
    Reread(i);
  } else if (state_ == kLiteral && text_[*i] == '\'') {
    state_ = kCode;
  } else if (state_ == kMultiLiteral && At(*i, "'''")) {
    state_ = kCode;
    *i = CloseMultiLine(text_, *i);
  }
}

}  // namespace

// toml++ 3.3 (Debian 12) reaches __builtin_unreachable() — undefined behaviour — when it asks
// whether certain non-ASCII characters are whitespace (is_non_ascii_horizontal_whitespace; found
// by tests/fuzz). It asks that of characters between tokens, of every character while it scans
// a bare value to its end (quotes included), and of what follows a backslash in a string (a
// line-ending backslash trims spaces and newlines). TOML allows non-ASCII only inside strings and
// comments, so this refuses it anywhere else, with the line, before toml++ sees it.
absl::Status CheckAsciiOutsideStrings(absl::string_view text, absl::string_view origin) {
  return AsciiScanner(text, origin).Scan();
}

}  // namespace ferry::config
