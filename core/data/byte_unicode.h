// The GPT-2 byte <-> Unicode table that byte-level BPE vocabularies are written in, plus the
// small UTF-8 helpers the tokenizer needs. Every byte maps to one printable code point: the
// printable Latin-1 bytes map to themselves and the other 68 bytes (controls, space, 0x7F-0xA0,
// 0xAD) to U+0100.. in byte order, so a vocabulary of byte strings is valid JSON text.
// Leaves out: normalisation (NFC and friends) and any other Unicode table.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sigma {

// The code point that stands for `byte` in a tokenizer.json vocabulary.
char32_t byte_to_code_point(uint8_t byte);

// The byte a code point stands for, or -1 when it is not one of the table's 256 code points.
int code_point_to_byte(char32_t code_point);

// Raw bytes -> their vocabulary spelling (UTF-8 of one table code point per byte).
std::string bytes_to_vocab_string(std::string_view bytes);

// A vocabulary spelling -> the raw bytes, or nullopt when the text is not valid UTF-8 or a
// character is not in the table (added tokens such as "hello world" are spelled literally).
std::optional<std::string> vocab_string_to_bytes(std::string_view text);

// UTF-8 of one code point (no validation: callers pass code points below 0x110000).
void append_utf8(std::string& out, char32_t code_point);

// Decodes the character at text[pos]; returns its code point and advances pos. An invalid or
// truncated sequence yields nullopt and advances pos by one byte.
std::optional<char32_t> next_code_point(std::string_view text, size_t& pos);

// The Unicode White_Space property: what added tokens' lstrip/rstrip remove.
bool is_unicode_white_space(char32_t code_point);

}  // namespace sigma
