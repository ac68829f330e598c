import ArgumentParser
import RemoteMem

/// Checks of volume names and sizes given on the command line: bad ones are flag errors (exit 2)
/// with the rule in the message, caught before any server is asked.
enum VolumeArguments {
    /// Throws a `ValidationError` unless `name` is a valid volume name.
    static func checkName(_ name: String) throws(ValidationError) {
        do throws(ControlError) {
            try ControlClient.checkName(name)
        } catch {
            throw ValidationError(error.description)
        }
    }

    /// The size `text` (K/M/G/T suffixes) in bytes, or a `ValidationError` saying what a size is.
    static func size(_ text: String) throws(ValidationError) -> UInt64 {
        guard let bytes = ByteSize(parsing: text)?.bytes else {
            throw ValidationError("--size '\(text)' is not a size (examples: 512M, 20G, 1T)")
        }
        do throws(ControlError) {
            try ControlClient.checkSize(bytes)
        } catch {
            throw ValidationError("--size '\(text)': \(error)")
        }
        return bytes
    }
}
