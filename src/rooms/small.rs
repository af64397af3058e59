//! A map that keeps a single entry inline and becomes a `HashMap` from the second on.
//!
//! Most entries of the registry are tiny: a socket's own room has one member, and most sockets are in
//! one or two rooms. A `HashMap` allocates a table of at least four buckets for its first entry; this
//! keeps that entry in place instead, which is most of a room's cost per idle connection.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map;
use std::hash::Hash;

#[derive(Debug, Clone, Default)]
pub(super) enum SmallMap<K, V> {
    #[default]
    Empty,
    One(K, V),
    Many(HashMap<K, V>),
}

impl<K: Hash + Eq, V> SmallMap<K, V> {
    pub(super) fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(..) => 1,
            Self::Many(map) => map.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self {
            Self::Empty => None,
            Self::One(k, v) => (k.borrow() == key).then_some((k, v)),
            Self::Many(map) => map.get_key_value(key),
        }
    }

    pub(super) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_key_value(key).is_some()
    }

    /// Inserts or replaces; returns the value replaced.
    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            Self::Empty => {
                *self = Self::One(key, value);
                None
            }
            Self::One(k, v) if *k == key => Some(std::mem::replace(v, value)),
            Self::One(..) => {
                let Self::One(k, v) = std::mem::take(self) else {
                    unreachable!("matched One above");
                };
                let mut map = HashMap::with_capacity(2);
                map.insert(k, v);
                map.insert(key, value);
                *self = Self::Many(map);
                None
            }
            Self::Many(map) => map.insert(key, value),
        }
    }

    pub(super) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self {
            Self::Empty => None,
            Self::One(k, _) if (*k).borrow() == key => match std::mem::take(self) {
                Self::One(_, v) => Some(v),
                _ => unreachable!("matched One above"),
            },
            Self::One(..) => None,
            Self::Many(map) => map.remove(key),
        }
    }

    pub(super) fn iter(&self) -> Iter<'_, K, V> {
        match self {
            Self::Empty => Iter::One(None),
            Self::One(k, v) => Iter::One(Some((k, v))),
            Self::Many(map) => Iter::Many(map.iter()),
        }
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }

    /// Empties the map, returning its keys.
    pub(super) fn take_keys(&mut self) -> Vec<K> {
        match std::mem::take(self) {
            Self::Empty => Vec::new(),
            Self::One(k, _) => vec![k],
            Self::Many(map) => map.into_keys().collect(),
        }
    }
}

pub(super) enum Iter<'a, K, V> {
    One(Option<(&'a K, &'a V)>),
    Many(hash_map::Iter<'a, K, V>),
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::One(one) => one.take(),
            Self::Many(iter) => iter.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Self::One(one) => (usize::from(one.is_some()), Some(usize::from(one.is_some()))),
            Self::Many(iter) => iter.size_hint(),
        }
    }
}

impl<'a, K: Hash + Eq, V> IntoIterator for &'a SmallMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any sequence of inserts and removes leaves it agreeing with a HashMap.
        #[test]
        fn behaves_as_a_hash_map(ops in prop::collection::vec((any::<bool>(), 0u8..6, any::<u16>()), 0..64)) {
            let mut small: SmallMap<String, u16> = SmallMap::default();
            let mut model: HashMap<String, u16> = HashMap::new();
            for (insert, key, value) in ops {
                let key = key.to_string();
                if insert {
                    prop_assert_eq!(small.insert(key.clone(), value), model.insert(key, value));
                } else {
                    prop_assert_eq!(small.remove(key.as_str()), model.remove(key.as_str()));
                }
                prop_assert_eq!(small.len(), model.len());
                prop_assert_eq!(small.is_empty(), model.is_empty());
                for k in 0u8..6 {
                    let k = k.to_string();
                    prop_assert_eq!(small.get_key_value(k.as_str()), model.get_key_value(k.as_str()));
                    prop_assert_eq!(small.contains_key(k.as_str()), model.contains_key(k.as_str()));
                }
                let mut items: Vec<_> = small.iter().map(|(k, v)| (k.clone(), *v)).collect();
                items.sort();
                let mut expected: Vec<_> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
                expected.sort();
                prop_assert_eq!(items, expected);
            }
            let mut keys = small.take_keys();
            keys.sort();
            let mut expected: Vec<_> = model.into_keys().collect();
            expected.sort();
            prop_assert_eq!(keys, expected);
            prop_assert!(small.is_empty());
        }
    }
}
