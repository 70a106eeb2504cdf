//! Serde for prost's `i32` enum fields: written as the value's short lower-case
//! name (`SEVERITY_CRITICAL` → `"critical"`); read back from that name, the full
//! proto name, or the number. An unknown number is written as the number.

macro_rules! enum_names {
    ($module:ident, $ty:ty, $prefix:literal) => {
        pub mod $module {
            use serde::{Deserialize, Deserializer, Serializer};

            pub fn serialize<S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
                match <$ty>::try_from(*value) {
                    Ok(v) => s.serialize_str(&short_name(v.as_str_name())),
                    Err(_) => s.serialize_i32(*value),
                }
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum NameOrNumber {
                    Number(i32),
                    Name(String),
                }
                match NameOrNumber::deserialize(d)? {
                    NameOrNumber::Number(n) => Ok(n),
                    NameOrNumber::Name(name) => {
                        let full = format!("{}{}", $prefix, name.to_ascii_uppercase());
                        <$ty>::from_str_name(&full)
                            .or_else(|| <$ty>::from_str_name(&name))
                            .map(|v| v as i32)
                            .ok_or_else(|| serde::de::Error::custom(format!("unknown value {name:?}")))
                    }
                }
            }

            /// `SEVERITY_CRITICAL` → `critical`.
            pub fn short_name(full: &str) -> String {
                full.strip_prefix($prefix).unwrap_or(full).to_ascii_lowercase()
            }

            /// For `repeated` enum fields.
            pub mod list {
                use serde::{Deserialize, Deserializer, Serializer, ser::SerializeSeq};

                pub fn serialize<S: Serializer>(values: &[i32], s: S) -> Result<S::Ok, S::Error> {
                    #[derive(serde::Serialize)]
                    struct One<'a>(#[serde(with = "super")] &'a i32);
                    let mut seq = s.serialize_seq(Some(values.len()))?;
                    for v in values {
                        seq.serialize_element(&One(v))?;
                    }
                    seq.end()
                }

                pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i32>, D::Error> {
                    #[derive(Deserialize)]
                    struct One(#[serde(with = "super")] i32);
                    Ok(Vec::<One>::deserialize(d)?.into_iter().map(|o| o.0).collect())
                }
            }

            /// The short name of a raw enum value, as serde writes it.
            pub fn name_of(value: i32) -> String {
                match <$ty>::try_from(value) {
                    Ok(v) => short_name(v.as_str_name()),
                    Err(_) => value.to_string(),
                }
            }
        }
    };
}

enum_names!(severity, crate::v1::Severity, "SEVERITY_");
enum_names!(process_state, crate::v1::ProcessState, "PROCESS_STATE_");
enum_names!(cgroup_version, crate::v1::CgroupVersion, "CGROUP_VERSION_");
enum_names!(privilege_level, crate::v1::PrivilegeLevel, "PRIVILEGE_LEVEL_");
enum_names!(fd_kind, crate::v1::FdKind, "FD_KIND_");
enum_names!(fd_info_level, crate::v1::FdInfoLevel, "FD_INFO_LEVEL_");
enum_names!(tcp_state, crate::v1::TcpState, "TCP_STATE_");
enum_names!(report_kind, crate::v1::ReportKind, "REPORT_KIND_");
enum_names!(profile_backend, crate::v1::ProfileBackend, "PROFILE_BACKEND_");

#[cfg(test)]
mod tests {
    use crate::v1::{Finding, Severity};

    #[test]
    fn enums_round_trip_as_short_names() {
        let f = Finding { severity: Severity::Critical as i32, ..Default::default() };
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["severity"], "critical");
        let back: Finding = serde_json::from_value(json).unwrap();
        assert_eq!(back.severity, Severity::Critical as i32);
    }

    #[test]
    fn repeated_enums_round_trip() {
        use crate::v1::{FdKind, ListFdsRequest, TcpState};
        let req = ListFdsRequest {
            kinds: vec![FdKind::Socket as i32, FdKind::Pipe as i32],
            tcp_states: vec![TcpState::CloseWait as i32],
            ..Default::default()
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["kinds"], serde_json::json!(["socket", "pipe"]));
        assert_eq!(json["tcp_states"], serde_json::json!(["close_wait"]));
        assert_eq!(serde_json::from_value::<ListFdsRequest>(json).unwrap(), req);
    }

    #[test]
    fn enums_accept_full_names_and_numbers_and_keep_unknown_numbers() {
        let f: Finding = serde_json::from_str(r#"{"severity":"SEVERITY_WARN"}"#).unwrap();
        assert_eq!(f.severity, Severity::Warn as i32);
        let f: Finding = serde_json::from_str(r#"{"severity":3}"#).unwrap();
        assert_eq!(f.severity, Severity::Critical as i32);
        let unknown = Finding { severity: 42, ..Default::default() };
        assert_eq!(serde_json::to_value(&unknown).unwrap()["severity"], 42);
        assert!(serde_json::from_str::<Finding>(r#"{"severity":"nope"}"#).is_err());
    }
}
