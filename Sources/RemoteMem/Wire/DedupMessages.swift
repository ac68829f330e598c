/// The de-duplication payloads of the wire protocol (docs/PROTOCOL.md, "De-duplication"):
/// `VOLUME_CREATE`'s optional flags, `VOLUME_CLONE`, `DEDUP_STAT` and `VOLUME_DEDUP_STAT`.
/// Every parser checks the whole payload, as `WireMessages` does.
public enum DedupMessages {
    /// `VOLUME_CREATE` / `VOLUME_CLONE` flag `NO_DEDUP`: the volume shares no frame with any
    /// other page (a tenant that wants none of its pages stored once for several).
    public static let volumeFlagNoDedup: UInt32 = 1 << 0
    /// Every volume flag this version knows; any other bit is `INVALID`.
    public static let volumeFlagsKnown: UInt32 = volumeFlagNoDedup
    /// HELLO reply flag `DEDUP`: the server de-duplicates and knows this file's opcodes and
    /// fields. An older server leaves it clear (and would close the connection on a
    /// `VOLUME_CREATE` with flags, so clients send flags only to servers that set it).
    public static let helloFlagDedup: UInt16 = 1 << 1
    /// `DEDUP_STAT`'s hash algorithm: MX128 (a keyed 128-bit hash of the page, memx-server's own).
    public static let hashMX128: UInt32 = 1

    /// `VOLUME_CREATE` payload with flags: size, name, then the flags (omitted when 0, so the
    /// request stays what an older server understands).
    public static func volumeCreate(name: String, sizeBytes: UInt64, flags: UInt32) -> [UInt8] {
        var writer = PayloadWriter()
        writer.u64(sizeBytes)
        writer.name(name)
        if flags != 0 { writer.u32(flags) }
        return writer.bytes
    }

    /// `VOLUME_CLONE` payload: flags, template name, new volume name.
    public static func volumeClone(template: String, name: String, flags: UInt32) -> [UInt8] {
        var writer = PayloadWriter()
        writer.u32(flags)
        writer.name(template)
        writer.name(name)
        return writer.bytes
    }
}

/// What `VOLUME_CLONE` did on one server.
public struct CloneResult: Equatable, Sendable {
    /// Pages the new volume holds (the template's written pages).
    public var pages: UInt64
    /// Frames it took: 0 when every page shares the template's frame.
    public var framesTaken: UInt64

    public init(pages: UInt64, framesTaken: UInt64) {
        self.pages = pages
        self.framesTaken = framesTaken
    }

    public init(_ payload: [UInt8]) throws(FrameError) {
        var reader = PayloadReader(payload)
        pages = try reader.u64()
        framesTaken = try reader.u64()
        try reader.finish()
    }

    public var encoded: [UInt8] {
        var writer = PayloadWriter()
        writer.u64(pages)
        writer.u64(framesTaken)
        return writer.bytes
    }
}

/// A server's de-duplication numbers (`DEDUP_STAT`): what it holds now, and totals since start.
public struct DedupStatistics: Equatable, Sendable {
    /// The page hash (`DedupMessages.hashMX128`).
    public var hashAlgorithm: UInt32
    /// Pages of every volume that hold data: what the volumes would cost without sharing.
    public var logicalPages: UInt64
    /// Frames in use: what they cost.
    public var storedFrames: UInt64
    /// Distinct contents stored for de-duplicating volumes.
    public var indexedFrames: UInt64
    /// Frames two or more pages point at.
    public var sharedFrames: UInt64
    /// Pages of volumes that do not de-duplicate (a frame each).
    public var privatePages: UInt64
    /// Totals since start: pages hashed, written pages found stored already, hash matches whose
    /// bytes differed, writes that moved a page off a shared frame, pages given to clones.
    public var pagesHashed: UInt64
    public var duplicatePages: UInt64
    public var hashCollisions: UInt64
    public var copiesOnWrite: UInt64
    public var clonedPages: UInt64

    public init(hashAlgorithm: UInt32, logicalPages: UInt64, storedFrames: UInt64, indexedFrames: UInt64,
                sharedFrames: UInt64, privatePages: UInt64, pagesHashed: UInt64, duplicatePages: UInt64,
                hashCollisions: UInt64, copiesOnWrite: UInt64, clonedPages: UInt64) {
        self.hashAlgorithm = hashAlgorithm
        self.logicalPages = logicalPages
        self.storedFrames = storedFrames
        self.indexedFrames = indexedFrames
        self.sharedFrames = sharedFrames
        self.privatePages = privatePages
        self.pagesHashed = pagesHashed
        self.duplicatePages = duplicatePages
        self.hashCollisions = hashCollisions
        self.copiesOnWrite = copiesOnWrite
        self.clonedPages = clonedPages
    }

    /// Frames sharing saves: logical pages minus stored frames (0 if sharing saves nothing).
    public var savedFrames: UInt64 { logicalPages > storedFrames ? logicalPages - storedFrames : 0 }
    /// The saving as a percentage of the logical size (0 for an empty server).
    public var savingPercent: Double { logicalPages == 0 ? 0 : Double(savedFrames) * 100 / Double(logicalPages) }

    public var encoded: [UInt8] {
        var writer = PayloadWriter()
        writer.u32(hashAlgorithm)
        writer.u32(0)
        for value in [logicalPages, storedFrames, indexedFrames, sharedFrames, privatePages, pagesHashed, duplicatePages,
                      hashCollisions, copiesOnWrite, clonedPages] {
            writer.u64(value)
        }
        return writer.bytes
    }

    public init(_ payload: [UInt8]) throws(FrameError) {
        var reader = PayloadReader(payload)
        hashAlgorithm = try reader.u32()
        _ = try reader.u32()  // reserved
        logicalPages = try reader.u64()
        storedFrames = try reader.u64()
        indexedFrames = try reader.u64()
        sharedFrames = try reader.u64()
        privatePages = try reader.u64()
        pagesHashed = try reader.u64()
        duplicatePages = try reader.u64()
        hashCollisions = try reader.u64()
        copiesOnWrite = try reader.u64()
        clonedPages = try reader.u64()
        try reader.finish()
    }
}

/// One volume's sharing on one server (`VOLUME_DEDUP_STAT`).
public struct VolumeDedupStatistics: Equatable, Sendable {
    /// `DedupMessages.volumeFlagNoDedup` if the volume does not de-duplicate.
    public var flags: UInt32
    /// Pages holding data.
    public var logicalPages: UInt64
    /// Of them, pages whose frame other pages (of any volume, this one included) point at too.
    public var sharedPages: UInt64
    /// The volume's fair share of the memory it uses: each page counts 4 KiB divided by the
    /// pages sharing its frame, so the volumes' charges add up to the server's used memory.
    public var chargedBytes: UInt64

    public init(flags: UInt32, logicalPages: UInt64, sharedPages: UInt64, chargedBytes: UInt64) {
        self.flags = flags
        self.logicalPages = logicalPages
        self.sharedPages = sharedPages
        self.chargedBytes = chargedBytes
    }

    public var deduplicates: Bool { flags & DedupMessages.volumeFlagNoDedup == 0 }

    public var encoded: [UInt8] {
        var writer = PayloadWriter()
        writer.u32(flags)
        writer.u32(0)
        writer.u64(logicalPages)
        writer.u64(sharedPages)
        writer.u64(chargedBytes)
        return writer.bytes
    }

    public init(_ payload: [UInt8]) throws(FrameError) {
        var reader = PayloadReader(payload)
        flags = try reader.u32()
        _ = try reader.u32()  // reserved
        logicalPages = try reader.u64()
        sharedPages = try reader.u64()
        chargedBytes = try reader.u64()
        try reader.finish()
    }
}
