/// An operational failure of a subcommand (a server refused, a volume is missing, a server is
/// unreachable for a change): `main` prints its one-line message and exits 1.
struct CommandFailure: Error, CustomStringConvertible {
    let message: String

    init(_ message: String) { self.message = message }

    var description: String { message }
}
