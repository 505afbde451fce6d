//! A ServiceAccount of the test with exactly the rules it is given, and a
//! kubeconfig that acts as it (impersonation), so that a process run with
//! that kubeconfig has that account's permissions and no more.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::Kubeconfig;

use crate::TestEnv;
use crate::objects::TEST_LABEL;

/// A ServiceAccount made by [`TestEnv::service_account`].
#[derive(Clone, Debug)]
pub struct ServiceAccountAccess {
    /// Its user name, `system:serviceaccount:<namespace>:<name>`.
    pub user: String,
    /// A kubeconfig (JSON) of the test cluster that impersonates it.
    pub kubeconfig: PathBuf,
}

impl TestEnv {
    /// Creates ServiceAccount `name` in the test's namespace with
    /// `cluster_rules` (a ClusterRole and its binding, named after the test)
    /// and `namespace_rules` (a Role in the test's namespace), and writes a
    /// kubeconfig acting as it into `dir`.
    pub async fn service_account(
        &self,
        name: &str,
        cluster_rules: Vec<PolicyRule>,
        namespace_rules: Vec<PolicyRule>,
        dir: &std::path::Path,
    ) -> ServiceAccountAccess {
        let meta = |name: String, namespace: Option<&str>| ObjectMeta {
            name: Some(name),
            namespace: namespace.map(str::to_owned),
            labels: Some(self.labels()),
            ..ObjectMeta::default()
        };
        let namespace = self.namespace();
        let account = ServiceAccount {
            metadata: meta(name.to_owned(), Some(namespace)),
            ..ServiceAccount::default()
        };
        let create = PostParams::default();
        Api::<ServiceAccount>::namespaced(self.client(), namespace)
            .create(&create, &account)
            .await
            .unwrap();
        let subjects = Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: name.to_owned(),
            namespace: Some(namespace.to_owned()),
            ..Subject::default()
        }]);
        let role_ref = |kind: &str, name: &str| RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: kind.to_owned(),
            name: name.to_owned(),
        };
        let cluster_role = self.name(&format!("{name}-cluster"));
        Api::<ClusterRole>::all(self.client())
            .create(
                &create,
                &ClusterRole {
                    metadata: meta(cluster_role.clone(), None),
                    rules: Some(cluster_rules),
                    ..ClusterRole::default()
                },
            )
            .await
            .unwrap();
        Api::<ClusterRoleBinding>::all(self.client())
            .create(
                &create,
                &ClusterRoleBinding {
                    metadata: meta(cluster_role.clone(), None),
                    role_ref: role_ref("ClusterRole", &cluster_role),
                    subjects: subjects.clone(),
                },
            )
            .await
            .unwrap();
        Api::<Role>::namespaced(self.client(), namespace)
            .create(
                &create,
                &Role {
                    metadata: meta(name.to_owned(), Some(namespace)),
                    rules: Some(namespace_rules),
                },
            )
            .await
            .unwrap();
        Api::<RoleBinding>::namespaced(self.client(), namespace)
            .create(
                &create,
                &RoleBinding {
                    metadata: meta(name.to_owned(), Some(namespace)),
                    role_ref: role_ref("Role", name),
                    subjects,
                },
            )
            .await
            .unwrap();

        let user = format!("system:serviceaccount:{namespace}:{name}");
        let kubeconfig = self.kubeconfig_as(&user, dir);
        ServiceAccountAccess { user, kubeconfig }
    }

    /// Writes into `dir` a kubeconfig of the test cluster that acts as
    /// `user` (for example `system:serviceaccount:<namespace>:<name>`),
    /// readable by anyone, and returns its path.
    pub fn kubeconfig_as(&self, user: &str, dir: &std::path::Path) -> PathBuf {
        let mut kubeconfig = Kubeconfig::read_from(self.cluster().kubeconfig()).unwrap();
        for named in &mut kubeconfig.auth_infos {
            if let Some(auth) = named.auth_info.as_mut() {
                auth.impersonate = Some(user.to_owned());
            }
        }
        let file = user.replace(':', "-");
        let path = dir.join(format!("{file}.kubeconfig"));
        std::fs::write(&path, serde_json::to_vec_pretty(&kubeconfig).unwrap()).unwrap();
        path
    }

    /// Deletes the cluster-wide RBAC objects of this test (the namespaced
    /// ones go with nothing: no namespace controller runs, and they are
    /// harmless).
    pub(crate) async fn delete_cluster_roles(&self) {
        let lp = ListParams::default().labels(&format!("{TEST_LABEL}={}", self.prefix()));
        let _ = Api::<ClusterRoleBinding>::all(self.client())
            .delete_collection(&DeleteParams::default(), &lp)
            .await;
        let _ = Api::<ClusterRole>::all(self.client())
            .delete_collection(&DeleteParams::default(), &lp)
            .await;
    }
}
