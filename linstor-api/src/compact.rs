//! Compact containers for decoded answers.
//!
//! Large answers (for example `/v1/view/resources` with tens of thousands of resources) hold
//! many short lists and small maps. The standard containers over-allocate for them: a decoded
//! `Vec` grows to a capacity of four elements at its first element, and a `BTreeMap` allocates a
//! node for eleven entries at its first entry. The types and functions here keep such data at
//! its exact size.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// A map from strings to values, stored as a vector of entries sorted by key.
///
/// Encoded as a JSON object, like a `BTreeMap<String, V>`, and iterated in key order. Lookups
/// are binary searches; insertions move the entries behind the new one, so the type suits the
/// small maps of the API (connections by peer node, replication states, effective properties),
/// not maps that grow one entry at a time to large sizes. When a JSON object names a key twice,
/// the last value wins.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VecMap<V> {
    entries: Vec<(String, V)>,
}

impl<V> Default for VecMap<V> {
    fn default() -> Self {
        VecMap { entries: Vec::new() }
    }
}

impl<V: fmt::Debug> fmt::Debug for VecMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V> VecMap<V> {
    /// An empty map (allocates nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position<Q>(&self, key: &Q) -> Result<usize, usize>
    where
        String: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.entries.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    /// The value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        String: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.position(key).ok().map(|i| &self.entries[i].1)
    }

    /// The value of `key`, mutable.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        String: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        match self.position(key) {
            Ok(i) => Some(&mut self.entries[i].1),
            Err(_) => None,
        }
    }

    /// Whether the map has an entry for `key`.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        String: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.position(key).is_ok()
    }

    /// Sets the value of `key`, returning the previous value.
    pub fn insert(&mut self, key: String, value: V) -> Option<V> {
        match self.position(key.as_str()) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes the entry of `key`, returning its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        String: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        match self.position(key) {
            Ok(i) => Some(self.entries.remove(i).1),
            Err(_) => None,
        }
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&String, &V)> + DoubleEndedIterator {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The keys in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &String> + DoubleEndedIterator {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &V> + DoubleEndedIterator {
        self.entries.iter().map(|(_, v)| v)
    }

    /// Builds the map from entries in any order; of entries with equal keys the last one wins.
    fn from_entries(mut entries: Vec<(String, V)>) -> Self {
        if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            // Stable: entries with equal keys keep their order, so the last one is the latest.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.dedup_by(|later, kept| {
                if later.0 == kept.0 {
                    std::mem::swap(later, kept);
                    true
                } else {
                    false
                }
            });
        }
        VecMap { entries }
    }
}

impl<V> FromIterator<(String, V)> for VecMap<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(iter: I) -> Self {
        Self::from_entries(iter.into_iter().collect())
    }
}

impl<V> Extend<(String, V)> for VecMap<V> {
    fn extend<I: IntoIterator<Item = (String, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<V> IntoIterator for VecMap<V> {
    type Item = (String, V);
    type IntoIter = std::vec::IntoIter<(String, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a, V> IntoIterator for &'a VecMap<V> {
    type Item = (&'a String, &'a V);
    type IntoIter =
        std::iter::Map<std::slice::Iter<'a, (String, V)>, fn(&'a (String, V)) -> (&'a String, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl<V> From<std::collections::BTreeMap<String, V>> for VecMap<V> {
    fn from(map: std::collections::BTreeMap<String, V>) -> Self {
        VecMap {
            entries: map.into_iter().collect(),
        }
    }
}

impl<V: Serialize> Serialize for VecMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for VecMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = VecMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<VecMap<V>, A::Error> {
                let entries = collect_exact(|| access.next_entry::<String, V>())?;
                Ok(VecMap::from_entries(entries))
            }
        }

        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

/// Collects the items `next` yields into a vector whose capacity equals its length.
///
/// Lists of up to four items are allocated once at their exact size; longer lists grow as usual
/// and are shrunk at the end.
fn collect_exact<T, E>(mut next: impl FnMut() -> Result<Option<T>, E>) -> Result<Vec<T>, E> {
    // `vec![..]` allocates exactly as many elements as it is given.
    let Some(a) = next()? else {
        return Ok(Vec::new());
    };
    let Some(b) = next()? else {
        return Ok(vec![a]);
    };
    let Some(c) = next()? else {
        return Ok(vec![a, b]);
    };
    let Some(d) = next()? else {
        return Ok(vec![a, b, c]);
    };
    let Some(e) = next()? else {
        return Ok(vec![a, b, c, d]);
    };
    let mut v = Vec::with_capacity(8);
    v.extend([a, b, c, d, e]);
    while let Some(x) = next()? {
        v.push(x);
    }
    v.shrink_to_fit();
    Ok(v)
}

/// Decodes a JSON array into a `Vec` whose capacity equals its length (see [`collect_exact`]).
///
/// For `#[serde(deserialize_with = "exact_vec")]` on list fields of the models.
pub(crate) fn exact_vec<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct SeqVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for SeqVisitor<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            collect_exact(|| seq.next_element::<T>())
        }
    }

    deserializer.deserialize_seq(SeqVisitor(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Lists {
        #[serde(deserialize_with = "exact_vec")]
        items: Vec<u32>,
    }

    #[test]
    fn lists_are_allocated_at_their_exact_size() {
        for n in 0..12u32 {
            let items: Vec<u32> = (0..n).collect();
            let json = serde_json::json!({ "items": items }).to_string();
            let l: Lists = serde_json::from_str(&json).unwrap();
            assert_eq!(l.items, items);
            assert_eq!(l.items.capacity(), l.items.len());
        }
        assert!(serde_json::from_str::<Lists>(r#"{"items":{}}"#).is_err());
        assert!(serde_json::from_str::<Lists>(r#"{"items":[1,"x"]}"#).is_err());
    }

    #[test]
    fn maps_sort_their_keys_and_keep_the_last_duplicate() {
        let m: VecMap<u32> = serde_json::from_str(r#"{"b":1,"a":2,"c":3,"a":4}"#).unwrap();
        assert_eq!(m.keys().map(String::as_str).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(m.get("a"), Some(&4));
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"a":4,"b":1,"c":3}"#);
        let sorted: VecMap<u32> = serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap();
        assert_eq!(sorted.len(), 2);
        assert!(serde_json::from_str::<VecMap<u32>>("[]").is_err());
    }

    #[test]
    fn map_edits_keep_the_order() {
        let mut m = VecMap::new();
        assert_eq!(m.insert("b".to_owned(), 1), None);
        assert_eq!(m.insert("a".to_owned(), 2), None);
        assert_eq!(m.insert("b".to_owned(), 3), Some(1));
        assert!(m.contains_key("a"));
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            [(&"a".to_owned(), &2), (&"b".to_owned(), &3)]
        );
        if let Some(v) = m.get_mut("a") {
            *v = 5;
        }
        assert_eq!(m.remove("a"), Some(5));
        assert_eq!(m.remove("a"), None);
        let collected: VecMap<u32> = [("z".to_owned(), 1), ("y".to_owned(), 2)].into_iter().collect();
        assert_eq!(collected.values().copied().collect::<Vec<_>>(), [2, 1]);
        let keys: Vec<&String> = (&collected).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["y", "z"]);
    }
}
