extension ControlClient {
    /// The server's `HELLO` reply (the wire codec's `HelloReply`).
    public typealias ServerHello = HelloReply
    /// A memory server's capacity and load (`SERVER_STAT`).
    public typealias ServerStat = ServerStatistics
    /// One volume's record on one server (`VOLUME_STAT`).
    public typealias VolumeStat = VolumeStatistics
    /// One volume of a `VOLUME_LIST` reply.
    public typealias VolumeEntry = VolumeListEntry
}
