#!/usr/bin/env python3
"""Structure checks run by scripts/test.sh (phase "structure"):

1. no Swift or C source file under Sources/ over 600 lines;
2. no function (func, init, deinit, closure-free body) over 80 lines, counted from its
   declaration to its closing brace;
3. every symbol docs/ARCHITECTURE.md cites in backticks exists in Sources/ (a type, function,
   property, enum case or file name), so the page cannot drift from the code;
4. no `as!` outside the weight-form registry and no form matched by string (`.kind ==`,
   `summary ==`, `summary.contains`): code asks the forms' capabilities.

Prints each violation with its place and exits 1 if there is any.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
SOURCE_EXT = (".swift", ".c", ".h")

FUNC_START = re.compile(r"^\s*(?:@\w+(?:\([^)]*\))?\s+)*(?:(?:public|private|internal|fileprivate|open|static|class|final|override|"
                        r"mutating|nonisolated(?:\(unsafe\))?|convenience|required)\s+)*(?:func\s+\S+|init[?!]?\s*[(<]|deinit\b)")
C_FUNC_START = re.compile(r"^(?:static\s+)?(?:inline\s+)?(?:__attribute__\(\(.*\)\)\s+)?[A-Za-z_][\w\s\*]*\b(\w+)\s*\([^;]*$")


def sources(folder="Sources"):
    for base, _, files in os.walk(os.path.join(ROOT, folder)):
        for f in sorted(files):
            if f.endswith(SOURCE_EXT):
                yield os.path.join(base, f)


def strip_strings_and_comments(line, in_block):
    """The line without string literals and comments (block comments may span lines)."""
    out, i = [], 0
    while i < len(line):
        if in_block:
            end = line.find("*/", i)
            if end < 0:
                return "".join(out), True
            i, in_block = end + 2, False
            continue
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            in_block, i = True, i + 2
            continue
        if line[i] == '"':
            j = i + 1
            while j < len(line) and line[j] != '"':
                j += 2 if line[j] == "\\" else 1
            i = j + 1
            continue
        out.append(line[i])
        i += 1
    return "".join(out), in_block


def long_functions(path, lines):
    """(line number, name, length) of every function body longer than the limit."""
    found, in_block = [], False
    clean = []
    for line in lines:
        text, in_block = strip_strings_and_comments(line, in_block)
        clean.append(text)
    i = 0
    while i < len(clean):
        line = clean[i]
        start = FUNC_START.match(line) if path.endswith(".swift") else C_FUNC_START.match(lines[i])
        if not start:
            i += 1
            continue
        # Find the body's opening brace, then its match.
        depth, opened, j = 0, False, i
        while j < len(clean):
            for ch in clean[j]:
                if ch == "{":
                    depth, opened = depth + 1, True
                elif ch == "}":
                    depth -= 1
            if opened and depth <= 0:
                break
            if not opened and (clean[j].rstrip().endswith(";") or (j > i and FUNC_START.match(clean[j]))):
                break   # a declaration without a body (protocol requirement, prototype)
            j += 1
        if opened:
            length = j - i + 1
            if length > MAX_FUNCTION_LINES:
                found.append((i + 1, line.strip()[:70], length))
        i += 1
    return found


def architecture_symbols():
    """Backticked words of docs/ARCHITECTURE.md that look like code symbols (placeholders of the
    how-to sections, `My...`, excepted)."""
    text = open(os.path.join(ROOT, "docs", "ARCHITECTURE.md"), encoding="utf-8").read()
    symbols = set()
    for raw in re.findall(r"`([^`\n]+)`", text):
        for token in re.split(r"[\s,()\[\]:<>=|]+", raw):
            token = token.strip(".")
            if "/" in token:
                token = token.rsplit("/", 1)[1]
            if not token or token.startswith(("-", "+", "$", "squeeze_", "SQUEEZE_", "OPENBLAS", "XDG", "My")) or "My" in token:
                continue
            if token.endswith((".swift", ".h", ".c")):
                symbols.add(token)
            elif "." in token:
                # Type.member: check both parts.
                parts = [p for p in token.split(".") if p]
                if all(re.fullmatch(r"[A-Za-z_]\w*", p) for p in parts) and parts[0][0].isupper():
                    symbols.update(parts)
            elif re.fullmatch(r"[A-Z][a-z]\w*", token) and len(token) > 3:
                symbols.add(token)
            elif re.fullmatch(r"[a-z]+[A-Z]\w*", token):
                symbols.add(token)
    return symbols


def defined(symbol, corpus, filenames):
    if symbol.endswith((".swift", ".h", ".c")):
        return symbol in filenames
    if symbol + ".swift" in filenames:
        return True
    pattern = re.compile(r"\b(?:class|struct|enum|protocol|typealias|func|var|let|case|init|extension)\s+" + re.escape(symbol) + r"\b"
                         r"|\bcase\s+(?:\w+\s*(?:\([^)]*\))?\s*,\s*)*" + re.escape(symbol) + r"\b"
                         r"|\bname:\s*\"" + re.escape(symbol) + r"\"")
    return pattern.search(corpus) is not None


def main():
    problems = []
    corpus_parts, filenames = [], set()
    for path in sources():
        rel = os.path.relpath(path, ROOT)
        filenames.add(os.path.basename(path))
        lines = open(path, encoding="utf-8").read().split("\n")
        corpus_parts.append("\n".join(lines))
        if len(lines) > MAX_FILE_LINES:
            problems.append(f"{rel}: {len(lines)} lines (at most {MAX_FILE_LINES})")
        for number, name, length in long_functions(path, lines):
            problems.append(f"{rel}:{number}: {name}: {length} lines (at most {MAX_FUNCTION_LINES})")
        if path.endswith(".swift") and not rel.endswith("WeightForms.swift"):
            for n, line in enumerate(lines, 1):
                code = line.split("//")[0]
                if re.search(r"\bas!", code):
                    problems.append(f"{rel}:{n}: `as!` outside the form registry: {line.strip()}")
                if re.search(r"\.(kind|summary)\s*==|summary\.contains|\.form\s*==", code):
                    problems.append(f"{rel}:{n}: a form matched by string: {line.strip()}")
    # Symbols may also be the package's targets or the tests' own types.
    corpus_parts.append(open(os.path.join(ROOT, "Package.swift"), encoding="utf-8").read())
    for path in sources("Tests"):
        filenames.add(os.path.basename(path))
        corpus_parts.append(open(path, encoding="utf-8").read())
    corpus = "\n".join(corpus_parts)
    for symbol in sorted(architecture_symbols()):
        if not defined(symbol, corpus, filenames):
            problems.append(f"docs/ARCHITECTURE.md cites `{symbol}`, which no source defines")
    for p in problems:
        print(p)
    print(f"structure: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
