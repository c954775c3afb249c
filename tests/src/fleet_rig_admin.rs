//! What a [`Rig`]'s gateway admin API says about tunnels and names (the revocation test and
//! benchmark read it).

use crate::fleet_rig::Rig;

impl Rig {
    /// The peer ids with a tunnel, as the admin API lists them.
    pub async fn providers(&self) -> Vec<String> {
        let body = self.gw.admin_get("/api/v1/providers").await;
        let list: serde_json::Value = serde_json::from_str(&body).expect("providers JSON");
        list.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["peer_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The owner of route `name` in the admin API, when it has one.
    pub async fn owner_of(&self, name: &str) -> Option<String> {
        let body = self.gw.admin_get("/api/v1/routes").await;
        let routes: serde_json::Value = serde_json::from_str(&body).expect("routes JSON");
        routes.as_array().and_then(|a| {
            a.iter()
                .find(|r| r["name"] == name)
                .and_then(|r| r["owner"].as_str().map(str::to_owned))
        })
    }
}
