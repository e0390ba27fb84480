//! Names → what the server holds under them (prepared statements, portals). The unnamed
//! statement and portal (the empty name) are what most drivers use for every statement and
//! what pgbench and libpq use for every portal, so they have a slot of their own: the
//! lookups each Bind, Describe and Execute makes for them hash nothing.

use std::collections::HashMap;

#[derive(Debug, Clone)]
pub(super) struct Names<V> {
    unnamed: Option<V>,
    named: HashMap<String, V>,
}

impl<V> Default for Names<V> {
    fn default() -> Self {
        Names {
            unnamed: None,
            named: HashMap::new(),
        }
    }
}

impl<V> Names<V> {
    pub fn get(&self, name: &str) -> Option<&V> {
        match name.is_empty() {
            true => self.unnamed.as_ref(),
            false => self.named.get(name),
        }
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        match name.is_empty() {
            true => self.unnamed.as_mut(),
            false => self.named.get_mut(name),
        }
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn insert(&mut self, name: String, value: V) -> Option<V> {
        match name.is_empty() {
            true => self.unnamed.replace(value),
            false => self.named.insert(name, value),
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<V> {
        match name.is_empty() {
            true => self.unnamed.take(),
            false => self.named.remove(name),
        }
    }

    pub fn clear(&mut self) {
        self.unnamed = None;
        self.named.clear();
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.unnamed.iter_mut().chain(self.named.values_mut())
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        usize::from(self.unnamed.is_some()) + self.named.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unnamed_slot_behaves_as_any_other_name() {
        let mut names = Names::default();
        assert_eq!(names.insert(String::new(), 1), None);
        assert_eq!(names.insert("s1".into(), 2), None);
        assert_eq!(names.insert(String::new(), 3), Some(1));
        assert_eq!(
            (names.get(""), names.get("s1"), names.len()),
            (Some(&3), Some(&2), 2)
        );
        names.values_mut().for_each(|v| *v += 10);
        assert_eq!(names.remove(""), Some(13));
        assert!(!names.contains_key("") && names.contains_key("s1"));
        names.clear();
        assert_eq!(names.len(), 0);
    }
}
