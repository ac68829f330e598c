import Glibc

/// The process's output streams: results on stdout (`print`), one-line errors on stderr.
enum Standard {
    /// Writes `line` and a newline to stderr, unbuffered.
    static func error(_ line: String) {
        let text = line + "\n"
        _ = text.withCString { write(2, $0, strlen($0)) }
    }
}
