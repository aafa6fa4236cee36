//! The Kubernetes API source: connecting, waiting for the first full list (`weir-kube` does the
//! watching), and the Events about what the agent cannot program.

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use weir_kube::{events::Notices, KubeSource, Options};

pub struct Kubernetes {
    pub source: KubeSource,
    pub notices: Notices,
    pub client: kube::Client,
}

impl Kubernetes {
    /// Connects with the in-cluster service account, or KUBECONFIG / ~/.kube/config outside a
    /// pod, and starts watching. Returns at once: wait on [`KubeSource::synced`] before
    /// programming from it.
    pub async fn connect(node_name: &str, service_cidr: Ipv4Net) -> Result<Self> {
        let client = kube::Client::try_default().await.context(
            "connecting to the Kubernetes API (in-cluster service account, or KUBECONFIG)",
        )?;
        Ok(Self::with_client(client, node_name, service_cidr))
    }

    pub fn with_client(client: kube::Client, node_name: &str, service_cidr: Ipv4Net) -> Self {
        let source = KubeSource::spawn(
            client.clone(),
            Options {
                service_cidr: Some(service_cidr),
            },
        );
        Self {
            source,
            notices: Notices::new(client.clone(), node_name, Some(service_cidr)),
            client,
        }
    }

    /// Writes ClusterNetworkPolicy status conditions whenever this agent holds the cluster's
    /// status Lease (in the agent's own namespace); runs for ever.
    pub async fn write_cluster_policy_status(
        client: kube::Client,
        source: KubeSource,
        identity: String,
    ) {
        let namespace = client.default_namespace().to_owned();
        weir_kube::status::run(client, source, namespace, identity).await;
    }
}
