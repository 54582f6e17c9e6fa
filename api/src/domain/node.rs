//! A node as clients see it (CONTRACT.md), and its analysis status.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Serialize, Serializer};
use utoipa::ToSchema;

use super::mutation::MutationFilter;

/// Content limits of a node, in characters.
pub const MAX_CONTENT_CHARS: usize = 5000;

/// Where a node is in the analysis pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AnalysisStatus {
    /// Stored, waiting for analysis.
    Pending,
    /// Claimed by a worker.
    Processing,
    /// Analysed.
    Completed,
    /// Analysis gave up.
    Failed,
}

impl AnalysisStatus {
    /// Parses the database's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => Self::Pending,
            "PROCESSING" => Self::Processing,
            "COMPLETED" => Self::Completed,
            "FAILED" => Self::Failed,
            _ => return None,
        })
    }
}

/// A node on the wire. Field names are exact, including `cratedAt`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Its id.
    pub id: i64,
    /// Its text.
    pub content: String,
    /// The author's nickname.
    pub author_nickname: String,
    /// Its topic; `null` until analysed.
    pub topic: Option<String>,
    /// Its emotion; `neutral` until analysed.
    pub emotion: String,
    /// Its drift class; a root is `ORIGIN` from the start, a child has none until analysed.
    pub mutation_filter: Option<MutationFilter>,
    /// Its drift score; a root has 0.0 from the start, a child has none until analysed.
    pub mutation_score: Option<f64>,
    /// X.
    pub x: f64,
    /// Y.
    pub y: f64,
    /// Z.
    pub z: f64,
    /// The node it answers; `null` for a root.
    pub parent_id: Option<i64>,
    /// The root of its tree; a root's own id.
    pub root_id: i64,
    /// Creation time as a local date-time without zone (UTC), the old server's spelling.
    #[serde(rename = "cratedAt", serialize_with = "local_date_time")]
    #[schema(
        value_type = String,
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}$",
        example = "2026-11-21T09:30:00.123"
    )]
    pub crated_at: DateTime<Utc>,
    /// Creation time with its zone.
    #[serde(serialize_with = "zoned_date_time")]
    pub created_at: DateTime<Utc>,
    /// Where it is in the analysis pipeline.
    pub analysis_status: AnalysisStatus,
}

/// `2026-11-21T09:30:00.123`: ISO-8601 local date-time, milliseconds, no zone; what
/// `%Y-%m-%dT%H:%M:%S%.3f` gives.
fn local_date_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    match Stamp::new(t, Fraction::Millis, false) {
        Some(stamp) => s.serialize_str(stamp.as_str()),
        None => s.collect_str(&t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.3f")),
    }
}

/// `2026-11-21T09:30:00.123456Z`: RFC 3339 in UTC, the fraction as chrono's serde writes it.
fn zoned_date_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    match Stamp::new(t, Fraction::Auto, true) {
        Some(stamp) => s.serialize_str(stamp.as_str()),
        None => t.serialize(s),
    }
}

/// The digits of a fraction of a second.
#[derive(Debug, Clone, Copy)]
enum Fraction {
    /// Always three (milliseconds, truncated), as `%.3f`.
    Millis,
    /// None, three, six or nine: the fewest that lose nothing (chrono's `SecondsFormat::AutoSi`).
    Auto,
}

/// A timestamp spelt into a buffer on the stack, byte for byte what chrono writes. Why: chrono's
/// `format` parses its pattern on every call and `collect_str` escapes every piece it writes;
/// with `perf` over `/viz` (about 140 nodes an answer) the two timestamps of each node were a
/// fifth of the API's CPU. A year outside 0..=9999 or a leap second is left to chrono (`None`).
struct Stamp {
    buf: [u8; 30],
    len: usize,
}

impl Stamp {
    fn new(t: &DateTime<Utc>, fraction: Fraction, zulu: bool) -> Option<Self> {
        let t = t.naive_utc();
        let nano = t.nanosecond();
        let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
        if nano >= 1_000_000_000 {
            return None;
        }
        let mut s = Stamp {
            buf: [0; 30],
            len: 0,
        };
        s.digits(year, 4);
        s.push(b'-');
        s.digits(t.month(), 2);
        s.push(b'-');
        s.digits(t.day(), 2);
        s.push(b'T');
        s.digits(t.hour(), 2);
        s.push(b':');
        s.digits(t.minute(), 2);
        s.push(b':');
        s.digits(t.second(), 2);
        let (value, width) = match fraction {
            Fraction::Millis => (nano / 1_000_000, 3),
            Fraction::Auto if nano == 0 => (0, 0),
            Fraction::Auto if nano.is_multiple_of(1_000_000) => (nano / 1_000_000, 3),
            Fraction::Auto if nano.is_multiple_of(1_000) => (nano / 1_000, 6),
            Fraction::Auto => (nano, 9),
        };
        if width > 0 {
            s.push(b'.');
            s.digits(value, width);
        }
        if zulu {
            s.push(b'Z');
        }
        Some(s)
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    /// `v` in `width` decimal digits, zero-padded (`v` has no more).
    fn digits(&mut self, mut v: u32, width: usize) {
        for i in (0..width).rev() {
            self.buf[self.len + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        self.len += width;
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).expect("a stamp is ASCII digits and separators")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    /// Both timestamps of a node, as the wire spells them.
    fn stamps(t: DateTime<Utc>) -> (String, String) {
        #[derive(Serialize)]
        struct Both {
            #[serde(serialize_with = "local_date_time")]
            local: DateTime<Utc>,
            #[serde(serialize_with = "zoned_date_time")]
            zoned: DateTime<Utc>,
        }
        let json = serde_json::to_value(Both { local: t, zoned: t }).unwrap();
        (
            json["local"].as_str().unwrap().to_owned(),
            json["zoned"].as_str().unwrap().to_owned(),
        )
    }

    /// What chrono writes: the pattern the wire was defined with, and its serde format.
    fn chrono_stamps(t: DateTime<Utc>) -> (String, String) {
        (
            t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.3f").to_string(),
            serde_json::to_value(t)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned(),
        )
    }

    proptest! {
        #[test]
        fn stamps_are_chronos_spelling(
            secs in -62_167_219_200_i64..253_402_300_800, // 0000-01-01 to 9999-12-31
            nano in prop_oneof![
                Just(0_u32),
                (0_u32..1000).prop_map(|m| m * 1_000_000),
                (0_u32..1_000_000).prop_map(|u| u * 1_000),
                0_u32..1_000_000_000,
            ],
        ) {
            let t = DateTime::from_timestamp(secs, nano).unwrap();
            prop_assert_eq!(stamps(t), chrono_stamps(t));
        }
    }

    #[test]
    fn stamps_chrono_spells_alone_are_left_to_it() {
        let leap = Utc.from_utc_datetime(
            &chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
                .unwrap()
                .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
                .unwrap(),
        );
        let far = DateTime::from_timestamp(253_402_300_800 + 86_400, 5_000_000).unwrap();
        let before = DateTime::from_timestamp(-62_167_219_200 - 86_400, 0).unwrap();
        for t in [leap, far, before] {
            assert!(Stamp::new(&t, Fraction::Auto, true).is_none(), "{t:?}");
            assert_eq!(stamps(t), chrono_stamps(t));
        }
        assert_eq!(stamps(leap).0, "2016-12-31T23:59:60.500");
        assert_eq!(stamps(far).1, "+10000-01-02T00:00:00.005Z");
    }

    #[test]
    fn wire_shape() {
        let t = Utc.with_ymd_and_hms(2026, 11, 21, 9, 30, 0).unwrap()
            + chrono::Duration::milliseconds(123);
        let node = Node {
            id: 42,
            content: "hi".into(),
            author_nickname: "차분한_구름_4821".into(),
            topic: None,
            emotion: "neutral".into(),
            mutation_filter: Some(MutationFilter::Evolution),
            mutation_score: Some(0.4123),
            x: 1.5,
            y: -3.25,
            z: 12.0,
            parent_id: Some(7),
            root_id: 1,
            crated_at: t,
            created_at: t,
            analysis_status: AnalysisStatus::Pending,
        };
        let json = serde_json::to_value(&node).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": 42, "content": "hi", "authorNickname": "차분한_구름_4821", "topic": null,
                "emotion": "neutral", "mutationFilter": "EVOLUTION", "mutationScore": 0.4123,
                "x": 1.5, "y": -3.25, "z": 12.0, "parentId": 7, "rootId": 1,
                "cratedAt": "2026-11-21T09:30:00.123", "createdAt": "2026-11-21T09:30:00.123Z",
                "analysisStatus": "PENDING"
            })
        );
    }
}
