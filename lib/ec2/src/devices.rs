//! Choosing a device name for an attachment.
//!
//! EC2 takes `/dev/sdf` ... `/dev/sdz` for data volumes; Xen kernels show
//! them as `/dev/xvdf`, so `sdf` and `xvdf` are one name, and a name taken
//! under either spelling (or with a partition number) is in use.

use std::collections::HashSet;

/// `/dev/xvdf1` → `sdf`.
pub fn normalize(name: &str) -> String {
    let base = name.trim_start_matches("/dev/");
    let base = base
        .strip_prefix("xvd")
        .map(|r| format!("sd{r}"))
        .unwrap_or_else(|| base.to_string());
    base.trim_end_matches(|c: char| c.is_ascii_digit())
        .to_string()
}

/// The first free name from `/dev/sdf` to `/dev/sdz`.
pub fn free_name(in_use: &HashSet<String>) -> Option<String> {
    ('f'..='z')
        .map(|c| format!("sd{c}"))
        .find(|n| !in_use.contains(n))
        .map(|n| format!("/dev/{n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_partitions_count_as_in_use() {
        assert_eq!(normalize("/dev/xvdf"), "sdf");
        assert_eq!(normalize("/dev/sda1"), "sda");
        assert_eq!(normalize("xvdg2"), "sdg");
        let used: HashSet<String> = ["/dev/sda1", "/dev/xvdf", "sdg"]
            .iter()
            .map(|s| normalize(s))
            .collect();
        assert_eq!(free_name(&used).as_deref(), Some("/dev/sdh"));
        let all: HashSet<String> = ('f'..='z').map(|c| format!("sd{c}")).collect();
        assert_eq!(free_name(&all), None);
    }
}
