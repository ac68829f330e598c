import Glibc
import VhostUser

/// Writes a disk image file through a vhost-user-blk socket from sector 0, the way a guest
/// installing it would (128 KiB requests, then FLUSH), and stops the device cleanly.
struct ImageWriter {
    let socketPath: String
    let imagePath: String
    static let chunkBytes = 128 << 10

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    func run() throws {
        guard let file = fopen(imagePath, "rb") else { throw Failure(description: "cannot open \(imagePath)") }
        defer { fclose(file) }
        let client = try FrontendClient.connect(socketPath: socketPath, guestRAM: try GuestRAM(sizeBytes: 64 << 20))
        var options = BlockQueueOptions()
        options.descriptorLayout = .indirect
        options.dataBytesPerSlot = Self.chunkBytes
        let queue = try client.start(queues: 1, queueSize: 128, queueOptions: options)[0]
        var chunk = [UInt8](repeating: 0, count: Self.chunkBytes)
        var offset: UInt64 = 0
        let start = nowNanos()
        while true {
            let read = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, Self.chunkBytes, file) }
            if read == 0 { break }
            let length = (read + 511) / 512 * 512
            if length > read { for i in read..<length { chunk[i] = 0 } }
            let completion = try queue.write(sector: offset / 512, data: Array(chunk[0..<length]))
            guard completion.isOK else { throw Failure(description: "write at \(offset) failed: status \(completion.statusByte)") }
            offset += UInt64(length)
        }
        guard try queue.perform(.flush).isOK else { throw Failure(description: "FLUSH failed") }
        _ = try client.stop()
        let seconds = Double(nowNanos() - start) / 1e9
        print("wrote \(offset) bytes in \(fixed(seconds, 2)) s")
    }
}
