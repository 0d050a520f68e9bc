//! The hash against values PostgreSQL 15 computed (`hashint4extended(1,
//! x'7A5B22367996DCFD'::bigint)` and so on, on x86-64), and the value parsers.

use pgoutput_decoder::Column;

use super::hash::*;
use super::key::KeyType;

/// A value PostgreSQL prints as a signed `bigint`.
fn pg(v: i64) -> u64 {
    v.cast_unsigned()
}

#[test]
fn the_extended_hashes_are_postgresqls() {
    let seed = HASH_PARTITION_SEED;
    assert_eq!(seed, pg(8_816_678_312_871_386_365));
    assert_eq!(hash_int4(1, seed), pg(5_968_994_663_651_403_477));
    assert_eq!(hash_int4(-1, seed), pg(-5_017_072_347_659_237_694));
    assert_eq!(hash_int8(5_000_000_000, seed), pg(-2_799_505_259_769_899_283));
    // int8 values in int4's range hash as int4 does.
    assert_eq!(hash_int8(-1, seed), hash_int4(-1, seed));
    assert_eq!(hash_bytes_extended(b"hello", seed), pg(-2_635_279_551_741_001_039));
    assert_eq!(hash_bytes_extended(b"", seed), pg(-5_700_645_584_453_517_373));
    assert_eq!(
        hash_bytes_extended(b"abcdefghijklmnopqrstuvwxyz", seed),
        pg(-7_171_292_135_076_916_904)
    );
    // Without a seed the state is not perturbed.
    assert_eq!(hash_bytes_extended(b"abc", 0), pg(-6_747_756_470_228_489_321));
}

#[test]
fn typed_values_hash_from_text_and_binary_alike() {
    let cases: &[(KeyType, &[u8], &[u8], i64)] = &[
        (KeyType::Int4, b"1", &1i32.to_be_bytes(), 5_968_994_663_651_403_477),
        (KeyType::Int2, b"-1", &(-1i16).to_be_bytes(), -5_017_072_347_659_237_694),
        (KeyType::Int8, b"5000000000", &5_000_000_000i64.to_be_bytes(), -2_799_505_259_769_899_283),
        (
            KeyType::Uuid,
            b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            &[
                0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
                0x0a, 0x11,
            ],
            424_513_190_990_560_493,
        ),
        // 12345.678: ndigits 3, weight 1, sign +, dscale 3, digits 1 2345 6780.
        (
            KeyType::Numeric,
            b"12345.678",
            &[0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1a, 0x7c],
            -4_016_348_884_958_903_928,
        ),
        // -0.001: ndigits 1, weight -1, sign -, dscale 3, digit 10.
        (
            KeyType::Numeric,
            b"-0.001",
            &[0, 1, 0xff, 0xff, 0x40, 0, 0, 3, 0, 10],
            -3_161_032_435_659_866_578,
        ),
        (KeyType::Numeric, b"0", &[0, 0, 0, 0, 0, 0, 0, 0], 8_816_678_312_871_386_364),
        (KeyType::Numeric, b"NaN", &[0, 0, 0, 0, 0xc0, 0, 0, 0], 8_816_678_312_871_386_365),
        // 2024-02-29 is day 8825 of 2000-01-01.
        (KeyType::Date, b"2024-02-29", &8825i32.to_be_bytes(), -7_425_094_147_693_931_516),
        (KeyType::Text, b"hello", b"hello", -2_635_279_551_741_001_039),
        (KeyType::Bpchar, b"hello   ", b"hello", -2_635_279_551_741_001_039),
    ];
    for &(ty, text, binary, want) in cases {
        let want = Some(pg(want));
        assert_eq!(ty.hash(Column::Text(text)).unwrap(), want, "{ty:?} {text:?} as text");
        assert_eq!(ty.hash(Column::Binary(binary)).unwrap(), want, "{ty:?} {text:?} as binary");
    }
}

#[test]
fn scale_does_not_change_a_numerics_hash() {
    let h = |s: &[u8]| KeyType::Numeric.hash(Column::Text(s)).unwrap();
    assert_eq!(h(b"1"), h(b"1.000"));
    assert_eq!(h(b"10000"), h(b"1e4"));
    assert_eq!(h(b"0.00"), h(b"0"));
    assert_ne!(h(b"1"), h(b"10"));
}

#[test]
fn dates_before_the_common_era_and_infinities_parse() {
    let days = |s: &[u8]| KeyType::Date.hash(Column::Text(s)).unwrap();
    // 0001-12-31 BC is the day before 0001-01-01 AD.
    let bc = date2j(0, 12, 31) - POSTGRES_EPOCH_JDATE;
    assert_eq!(days(b"0001-12-31 BC"), Some(hash_int4(bc, HASH_PARTITION_SEED)));
    assert_eq!(date2j(1, 1, 1) - date2j(0, 12, 31), 1);
    assert_eq!(days(b"infinity"), Some(hash_int4(i32::MAX, HASH_PARTITION_SEED)));
    assert_eq!(days(b"-infinity"), Some(hash_int4(i32::MIN, HASH_PARTITION_SEED)));
}

#[test]
fn nulls_do_not_count_and_bad_values_are_errors() {
    assert_eq!(KeyType::Int4.hash(Column::Null).unwrap(), None);
    assert!(KeyType::Int4.hash(Column::UnchangedToast).is_err());
    assert!(KeyType::Int4.hash(Column::Text(b"x")).is_err());
    assert!(KeyType::Uuid.hash(Column::Text(b"a0eebc99")).is_err());
    assert!(KeyType::Int8.hash(Column::Binary(b"\0\0")).is_err());
    // A row of NULLs hashes to 0: partition 0, as PostgreSQL routes it.
    assert_eq!(row_hash([None, None]), 0);
    assert_eq!(partition_of(row_hash([Some(1)]), 4), partition_of(hash_combine64(0, 1), 4));
}
