//! The Java client's default partitioner for keyed records: murmur2 of the key bytes,
//! made positive, modulo the partition count. Using the same function everywhere means a
//! device lands on the same partition whichever client produced its events.

/// Kafka's murmur2 seed (`org.apache.kafka.common.utils.Utils.murmur2`).
const SEED: u32 = 0x9747_b28c;

/// Kafka's `Utils.murmur2` (MurmurHash2, little-endian blocks), as a signed 32-bit value.
pub fn murmur2(key: &[u8]) -> i32 {
    murmur2::murmur2(key, SEED) as i32
}

/// The partition a keyed record goes to, as the Java producer computes it.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    if partitions <= 0 {
        return 0;
    }
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Kafka's own UtilsTest.testMurmur2.
    #[test]
    fn matches_kafkas_murmur2() {
        let cases: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key.as_bytes()), expected, "{key}");
        }
    }
}
