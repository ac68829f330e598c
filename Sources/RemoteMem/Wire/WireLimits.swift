/// Hard limits of the MemX wire protocol (docs/PROTOCOL.md, "Limits"), each with its reason.
public enum WireLimits {
    /// The unit of placement and storage.
    public static let pageSize = 4096
    /// A 128 KiB guest request is one round trip per server.
    public static let pagesPerRequestMax: UInt32 = 32
    /// 4 GiB per TRIM (no page data travels).
    public static let trimPagesMax: UInt32 = 1 << 20
    /// The volume's group table.
    public static let metadataBytesMax = 1 << 20
    /// A migration source's list of hot pages (`HOT_PAGES_PUT`): runs of 12 bytes, enough for
    /// a 1 GiB cache of scattered pages, or any cache read in runs.
    public static let hotPagesBytesMax = 256 << 10
    /// The largest frame payload: a full METADATA_PUT.
    public static let payloadBytesMax = metadataBytesMax + 64
    /// Payload limit of every request that carries neither pages nor metadata.
    public static let smallPayloadBytesMax = 4096
    /// Volume names.
    public static let nameBytesMax = 64
    /// Requests outstanding per connection (the client's window).
    public static let inFlightMax = 64
    /// As the embedded pool.
    public static let volumeBytesMax: UInt64 = 64 << 40
    /// Volumes one server holds, so a `VOLUME_LIST` reply (at most 82 bytes per volume) always
    /// fits one frame: 4 + 4096 × 82 bytes is about 328 KiB, under `payloadBytesMax`.
    public static let volumesMax = 4096
    /// "MEMXWIRE", the HELLO magic.
    public static let magic: UInt64 = 0x4552_4957_584D_454D
    /// The protocol version this code speaks.
    public static let version: UInt16 = 1

    /// The payload limit for a request with `opcode` (what the server accepts).
    public static func requestPayloadMax(_ opcode: Opcode, pageCount: UInt32) -> Int {
        switch opcode {
        case .write: Int(min(pageCount, pagesPerRequestMax)) * pageSize
        case .metadataPut: payloadBytesMax
        case .hotPagesPut: hotPagesBytesMax
        default: smallPayloadBytesMax
        }
    }

    /// True if `name` is a valid volume name: 1–64 of `[A-Za-z0-9._-]`, not starting with '.'.
    public static func isValidName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= nameBytesMax, bytes[0] != UInt8(ascii: ".") else { return false }
        return bytes.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a)
                || b == UInt8(ascii: ".") || b == UInt8(ascii: "_") || b == UInt8(ascii: "-")
        }
    }
}
