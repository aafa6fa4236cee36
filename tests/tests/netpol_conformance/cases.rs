// SPDX-License-Identifier: Apache-2.0
//! The 48 connectivity cases of upstream `network_policy.go`, in upstream order: 42 in
//! "NetworkPolicy between server and client" (TCP), 3 in "... using UDP" and 3 in "... using
//! SCTP". Each `Expect` is preceded by the upstream `Reachability` calls it was written from.
//! Upstream probes only the ports and protocols listed here, so do we.

use super::{
    Case,
    Protocol::{Sctp, Tcp, Udp},
    Step::{Apply, DeletePolicy, Expect, LabelNamespace, LabelPod},
};

pub const CASES: &[Case] = &[
    Case {
        name: "tcp/default-deny-ingress",
        upstream: "NetworkPolicy between server and client: should support a 'default-deny-ingress' policy",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-ingress
  namespace: x
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: []
"#),
            // ExpectPeer({}, {x}, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   X   .   .   .   .   .   .
x/b   X   -   X   .   .   .   .   .   .
x/c   X   X   -   .   .   .   .   .   .
y/a   X   X   X   -   .   .   .   .   .
y/b   X   X   X   .   -   .   .   .   .
y/c   X   X   X   .   .   -   .   .   .
z/a   X   X   X   .   .   .   -   .   .
z/b   X   X   X   .   .   .   .   -   .
z/c   X   X   X   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/default-deny-all",
        upstream: "NetworkPolicy between server and client: should support a 'default-deny-all' policy",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
  namespace: x
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress: []
  egress: []
"#),
            // ExpectPeer({}, {x}, false); ExpectPeer({x}, {}, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   X   X   X   X   X   X   X
x/b   X   -   X   X   X   X   X   X   X
x/c   X   X   -   X   X   X   X   X   X
y/a   X   X   X   -   .   .   .   .   .
y/b   X   X   X   .   -   .   .   .   .
y/c   X   X   X   .   .   -   .   .   .
z/a   X   X   X   .   .   .   -   .   .
z/b   X   X   X   .   .   .   .   -   .
z/c   X   X   X   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/pod-selector-in-server-namespace",
        upstream: "NetworkPolicy between server and client: should enforce policy to allow traffic from pods within server namespace based on PodSelector",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: x-a-allows-x-b
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {pod: b}
"#),
            // ExpectAllIngress(x/a, false); Expect(x/b, x/a, true)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   X   .   .   -   .   .   .   .   .
y/b   X   .   .   .   -   .   .   .   .
y/c   X   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/allow-ingress-for-target",
        upstream: "NetworkPolicy between server and client: should enforce policy to allow ingress traffic for a target",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
  namespace: x
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: []
"#),
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-all-to-a
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {}
      namespaceSelector: {}
"#),
            // ExpectAllIngress(x/a, true); ExpectAllIngress(x/b, false); ExpectAllIngress(x/c, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   X   .   .   .   .   .   .
x/b   .   -   X   .   .   .   .   .   .
x/c   .   X   -   .   .   .   .   .   .
y/a   .   X   X   -   .   .   .   .   .
y/b   .   X   X   .   -   .   .   .   .
y/c   .   X   X   .   .   -   .   .   .
z/a   .   X   X   .   .   .   -   .   .
z/b   .   X   X   .   .   .   .   -   .
z/c   .   X   X   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/allow-ingress-from-all-namespaces",
        upstream: "NetworkPolicy between server and client: should enforce policy to allow ingress traffic from pods in all namespaces",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-from-another-ns
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {}
"#),
            // everything connected
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/namespace-selector-other-namespace",
        upstream: "NetworkPolicy between server and client: should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-client-a-via-ns-selector
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: y}
"#),
            // ExpectPeer({x}, {x/a}, false); ExpectPeer({z}, {x/a}, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/pod-selector-match-expressions",
        upstream: "NetworkPolicy between server and client: should enforce policy based on PodSelector with MatchExpressions",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: x-a-allows-x-b
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchExpressions:
        - {key: pod, operator: In, values: [b]}
"#),
            // ExpectAllIngress(x/a, false); Expect(x/b, x/a, true)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   X   .   .   -   .   .   .   .   .
y/b   X   .   .   .   -   .   .   .   .
y/c   X   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/namespace-selector-match-expressions",
        upstream: "NetworkPolicy between server and client: should enforce policy based on NamespaceSelector with MatchExpressions",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-ns-y-match-selector
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: kubernetes.io/metadata.name, operator: In, values: [y]}
"#),
            // ExpectPeer({x}, {x/a}, false); ExpectPeer({z}, {x/a}, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/pod-selector-or-namespace-selector",
        upstream: "NetworkPolicy between server and client: should enforce policy based on PodSelector or NamespaceSelector",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-ns-y-match-selector
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}
    - podSelector:
        matchLabels: {pod: b}
"#),
            // Expect(x/a, x/a, false) [loopback, ignored]; Expect(x/c, x/a, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/pod-selector-and-namespace-selector",
        upstream: "NetworkPolicy between server and client: should enforce policy based on PodSelector and NamespaceSelector",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-ns-y-podselector-and-nsselector
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}
      podSelector:
        matchLabels: {pod: b}
"#),
            // ExpectAllIngress(x/a, false); Expect(y/b, x/a, true); Expect(z/b, x/a, true)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   X   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   X   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/multiple-pod-and-namespace-selectors",
        upstream: "NetworkPolicy between server and client: should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-ns-y-z-pod-b-c
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}
      podSelector:
        matchExpressions:
        - {key: pod, operator: In, values: [b, c]}
"#),
            // ExpectPeer({x}, {x/a}, false); Expect(y/a, x/a, false); Expect(z/a, x/a, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   X   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/any-pod-selectors",
        upstream: "NetworkPolicy between server and client: should enforce policy based on any PodSelectors",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-ns-x-pod-b-c
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {pod: b}
    - podSelector:
        matchLabels: {pod: c}
"#),
            // ExpectAllIngress(x/a, false); Expect(x/b, x/a, true); Expect(x/c, x/a, true)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   X   .   .   -   .   .   .   .   .
y/b   X   .   .   .   -   .   .   .   .
y/c   X   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/pod-in-other-namespace-by-pod-and-namespace-selector",
        upstream: "NetworkPolicy between server and client: should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-ns-y-pod-a-via-namespace-pod-selector
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: y}
      podSelector:
        matchLabels: {pod: a}
"#),
            // ExpectAllIngress(x/a, false); Expect(y/a, x/a, true)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   X   .   .   .   -   .   .   .   .
y/c   X   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/ports",
        upstream: "NetworkPolicy between server and client: should enforce policy based on Ports",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-client-a-via-ns-selector
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: y}
    ports:
    - {port: 81, protocol: TCP}
"#),
            // ExpectPeer({x}, {x/a}, false); ExpectPeer({y}, {x/a}, true); ExpectPeer({z}, {x/a}, false)
            Expect(Tcp, 81, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/stacked-policies-overlapping-pod-selectors",
        upstream: "NetworkPolicy between server and client: should enforce multiple, stacked policies with overlapping podSelectors",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-client-a-via-ns-selector
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: y}
    ports:
    - {port: 81, protocol: TCP}
"#),
            // reachabilityALLOW: ExpectPeer({x}, {x/a}, false); ExpectPeer({y}, {x/a}, true); ExpectPeer({z}, {x/a}, false)
            Expect(Tcp, 81, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
            // reachabilityDENY: ExpectAllIngress(x/a, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   X   .   .   -   .   .   .   .   .
y/b   X   .   .   .   -   .   .   .   .
y/c   X   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-client-a-via-ns-selector-80
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: y}
    ports:
    - {port: 80, protocol: TCP}
"#),
            // reachabilityALLOW again, now on port 80
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/allow-all",
        upstream: "NetworkPolicy between server and client: should support allow-all policy",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-all
  namespace: x
spec:
  podSelector:
    matchLabels: {}
  policyTypes: [Ingress]
  ingress:
  - {}
"#),
            // everything connected
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
            // everything connected
            Expect(Tcp, 81, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/named-port-ingress",
        upstream: "NetworkPolicy between server and client: should allow ingress access on one named port",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-all
  namespace: x
spec:
  podSelector:
    matchLabels: {}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - port: serve-81-tcp
"#),
            // everything connected
            Expect(Tcp, 81, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
            // ExpectPeer({}, {x}, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   X   .   .   .   .   .   .
x/b   X   -   X   .   .   .   .   .   .
x/c   X   X   -   .   .   .   .   .   .
y/a   X   X   X   -   .   .   .   .   .
y/b   X   X   X   .   -   .   .   .   .
y/c   X   X   X   .   .   -   .   .   .
z/a   X   X   X   .   .   .   -   .   .
z/b   X   X   X   .   .   .   .   -   .
z/c   X   X   X   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/named-port-ingress-from-namespace",
        upstream: "NetworkPolicy between server and client: should allow ingress access from namespace on one named port",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-client-a-via-ns-selector-80
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: y}
    ports:
    - {port: serve-80-tcp, protocol: TCP}
"#),
            // ExpectPeer({x}, {x/a}, false); ExpectPeer({z}, {x/a}, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
            // reachabilityFAIL: ExpectAllIngress(x/a, false)
            Expect(Tcp, 81, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   X   .   .   -   .   .   .   .   .
y/b   X   .   .   .   -   .   .   .   .
y/c   X   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/named-port-egress",
        upstream: "NetworkPolicy between server and client: should allow egress access on one named port",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-egress
  namespace: x
spec:
  podSelector:
    matchLabels: {}
  policyTypes: [Egress]
  egress:
  - ports:
    - port: serve-80-tcp
"#),
            // everything connected
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
            // ExpectPeer({x}, {}, false)
            Expect(Tcp, 81, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   X   X   X   X   X   X   X
x/b   X   -   X   X   X   X   X   X   X
x/c   X   X   -   X   X   X   X   X   X
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/updated-policy",
        upstream: "NetworkPolicy between server and client: should enforce updated policy",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-all-mutate-to-deny-all
  namespace: x
spec:
  podSelector:
    matchLabels: {}
  policyTypes: [Ingress]
  ingress:
  - {}
"#),
            // everything connected
            Expect(Tcp, 81, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-all-mutate-to-deny-all
  namespace: x
spec:
  podSelector:
    matchLabels: {}
  policyTypes: [Ingress]
  ingress: []
"#),
            // reachabilityDeny: ExpectPeer({}, {x}, false)
            Expect(Tcp, 81, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   X   .   .   .   .   .   .
x/b   X   -   X   .   .   .   .   .   .
x/c   X   X   -   .   .   .   .   .   .
y/a   X   X   X   -   .   .   .   .   .
y/b   X   X   X   .   -   .   .   .   .
y/c   X   X   X   .   .   -   .   .   .
z/a   X   X   X   .   .   .   -   .   .
z/b   X   X   X   .   .   .   .   -   .
z/c   X   X   X   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/updated-namespace-labels",
        upstream: "NetworkPolicy between server and client: should allow ingress access from updated namespace",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-client-a-via-ns-selector
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {ns2: updated}
"#),
            // ExpectAllIngress(x/a, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   X   .   .   -   .   .   .   .   .
y/b   X   .   .   .   -   .   .   .   .
y/c   X   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
            LabelNamespace("y", &["ns2=updated"]),
            // reachabilityWithLabel: ExpectAllIngress(x/a, false); ExpectPeer({y}, {}, true)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/updated-pod-labels",
        upstream: "NetworkPolicy between server and client: should allow ingress access from updated pod",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-client-a-via-pod-selector
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {pod: b, pod2: updated}
"#),
            // ExpectAllIngress(x/a, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   X   .   .   -   .   .   .   .   .
y/b   X   .   .   .   -   .   .   .   .
y/c   X   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
            LabelPod("x", "b", &["pod=b", "pod2=updated"]),
            // reachabilityWithLabel: ExpectAllIngress(x/a, false); Expect(x/b, x/a, true)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   X   .   .   -   .   .   .   .   .
y/b   X   .   .   .   -   .   .   .   .
y/c   X   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/deny-ingress-from-other-namespaces",
        upstream: "NetworkPolicy between server and client: should deny ingress from pods on other namespaces",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-empty-policy
  namespace: x
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {}
"#),
            // ExpectPeer({y}, {x}, false); ExpectPeer({z}, {x}, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   X   X   X   -   .   .   .   .   .
y/b   X   X   X   .   -   .   .   .   .
y/c   X   X   X   .   .   -   .   .   .
z/a   X   X   X   .   .   .   -   .   .
z/b   X   X   X   .   .   .   .   -   .
z/c   X   X   X   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/deny-ingress-to-updated-pod",
        upstream: "NetworkPolicy between server and client: should deny ingress access to updated pod",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-ingress-via-label-selector
  namespace: x
spec:
  podSelector:
    matchLabels: {target: isolated}
  policyTypes: [Ingress]
  ingress: []
"#),
            // everything connected (nothing carries target=isolated yet)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
            LabelPod("x", "a", &["target=isolated"]),
            // reachabilityIsolated: ExpectAllIngress(x/a, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   X   .   .   -   .   .   .   .   .
y/b   X   .   .   .   -   .   .   .   .
y/c   X   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/deny-egress-by-pod-selector",
        upstream: "NetworkPolicy between server and client: should deny egress from pods based on PodSelector",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-egress-pod-a
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Egress]
  egress: []
"#),
            // ExpectAllEgress(x/a, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   X   X   X   X   X   X   X
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/deny-egress-from-namespace",
        upstream: "NetworkPolicy between server and client: should deny egress from all pods in a namespace",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-egress-ns-x
  namespace: x
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: []
"#),
            // ExpectPeer({x}, {}, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   X   X   X   X   X   X   X
x/b   X   -   X   X   X   X   X   X   X
x/c   X   X   -   X   X   X   X   X   X
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/ingress-and-egress-together",
        upstream: "NetworkPolicy between server and client: should work with Ingress, Egress specified together",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-client-a-via-pod-selector
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Egress, Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {pod: b}
  egress:
  - ports:
    - port: 80
"#),
            // reachabilityPort80: ExpectAllIngress(x/a, false); Expect(x/b, x/a, true)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   X   .   .   -   .   .   .   .   .
y/b   X   .   .   .   -   .   .   .   .
y/c   X   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
            // reachabilityPort81: ExpectAllIngress(x/a, false); ExpectAllEgress(x/a, false); Expect(x/b, x/a, true)
            Expect(Tcp, 81, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   X   X   X   X   X   X   X
x/b   .   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   X   .   .   -   .   .   .   .   .
y/b   X   .   .   .   -   .   .   .   .
y/c   X   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/egress-denied-on-client-side",
        upstream: "NetworkPolicy between server and client: should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-to-ns-y-pod-a
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: y}
      podSelector:
        matchLabels: {pod: a}
"#),
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-from-xa-on-ya-match-selector
  namespace: y
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: x}
      podSelector:
        matchLabels: {pod: a}
"#),
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-from-xa-on-yb-match-selector
  namespace: y
spec:
  podSelector:
    matchLabels: {pod: b}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: x}
      podSelector:
        matchLabels: {pod: a}
"#),
            // ExpectPeer({x/a}, {}, false); ExpectPeer({}, {y/a}, false); ExpectPeer({x/a}, {y/a}, true); ExpectPeer({}, {y/b}, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   X   .   X   X   X   X   X
x/b   .   -   .   X   X   .   .   .   .
x/c   .   .   -   X   X   .   .   .   .
y/a   .   .   .   -   X   .   .   .   .
y/b   .   .   .   X   -   .   .   .   .
y/c   .   .   .   X   X   -   .   .   .
z/a   .   .   .   X   X   .   -   .   .
z/b   .   .   .   X   X   .   .   -   .
z/c   .   .   .   X   X   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/egress-to-pod-in-other-namespace",
        upstream: "NetworkPolicy between server and client: should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-to-ns-y-pod-a
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: y}
      podSelector:
        matchLabels: {pod: a}
"#),
            // ExpectAllEgress(x/a, false); Expect(x/a, y/a, true)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   X   .   X   X   X   X   X
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/ingress-any-port-on-one-protocol",
        upstream: "NetworkPolicy between server and client: should enforce ingress policy allowing any port traffic to a server on a specific protocol",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-ingress-by-proto
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - protocol: TCP
"#),
            // reachabilityTCP: everything connected
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
            // reachabilityUDP: ExpectPeer({}, {x/a}, false)
            Expect(Udp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   X   .   .   -   .   .   .   .   .
y/b   X   .   .   .   -   .   .   .   .
y/c   X   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/ingress-allow-all-takes-precedence",
        upstream: "NetworkPolicy between server and client: should enforce multiple ingress policies with ingress allow-all policy taking precedence",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-ingress-port-80
  namespace: x
spec:
  podSelector:
    matchLabels: {}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - port: 80
"#),
            // ExpectPeer({}, {x}, false)
            Expect(Tcp, 81, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   X   .   .   .   .   .   .
x/b   X   -   X   .   .   .   .   .   .
x/c   X   X   -   .   .   .   .   .   .
y/a   X   X   X   -   .   .   .   .   .
y/b   X   X   X   .   -   .   .   .   .
y/c   X   X   X   .   .   -   .   .   .
z/a   X   X   X   .   .   .   -   .   .
z/b   X   X   X   .   .   .   .   -   .
z/c   X   X   X   .   .   .   .   .   -
"),
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-ingress
  namespace: x
spec:
  podSelector:
    matchLabels: {}
  policyTypes: [Ingress]
  ingress:
  - {}
"#),
            // reachabilityAll: everything connected
            Expect(Tcp, 81, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/egress-allow-all-takes-precedence",
        upstream: "NetworkPolicy between server and client: should enforce multiple egress policies with egress allow-all policy taking precedence",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-egress-port-80
  namespace: x
spec:
  podSelector:
    matchLabels: {}
  policyTypes: [Egress]
  egress:
  - ports:
    - port: 80
"#),
            // ExpectPeer({x}, {}, false)
            Expect(Tcp, 81, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   X   X   X   X   X   X   X
x/b   X   -   X   X   X   X   X   X   X
x/c   X   X   -   X   X   X   X   X   X
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-egress
  namespace: x
spec:
  podSelector:
    matchLabels: {}
  policyTypes: [Egress]
  egress:
  - {}
"#),
            // reachabilityAll: everything connected
            Expect(Tcp, 81, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/stop-enforcing-after-delete",
        upstream: "NetworkPolicy between server and client: should stop enforcing policies after they are deleted",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
  namespace: x
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress: []
  egress: []
"#),
            // ExpectPeer({x}, {}, false); ExpectPeer({}, {x}, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   X   X   X   X   X   X   X
x/b   X   -   X   X   X   X   X   X   X
x/c   X   X   -   X   X   X   X   X   X
y/a   X   X   X   -   .   .   .   .   .
y/b   X   X   X   .   -   .   .   .   .
y/c   X   X   X   .   .   -   .   .   .
z/a   X   X   X   .   .   .   -   .   .
z/b   X   X   X   .   .   .   .   -   .
z/c   X   X   X   .   .   .   .   .   -
"),
            DeletePolicy("x", "deny-all"),
            // reachabilityAll: everything connected
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/egress-to-cidr",
        upstream: "NetworkPolicy between server and client: should allow egress access to server in CIDR block",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-client-a-via-cidr-egress-rule
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock:
        cidr: $IP(y/b)/32
"#),
            // ExpectAllEgress(x/a, false); Expect(x/a, y/b, true)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   X   X   .   X   X   X   X
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/egress-cidr-except",
        upstream: "NetworkPolicy between server and client: should enforce except clause while egress access to server in CIDR block",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-client-a-via-cidr-egress-rule
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock:
        cidr: $CIDR4(x/b)
        except:
        - $IP(x/b)/32
"#),
            // Expect(x/a, x/b, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/ip-in-both-cidr-and-except",
        upstream: "NetworkPolicy between server and client: should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-client-a-via-cidr-egress-rule
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock:
        cidr: $CIDR4(x/b)
        except:
        - $IP(x/b)/32
"#),
            // Expect(x/a, x/b, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-client-a-via-cidr-egress-rule
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock:
        cidr: $IP(x/b)/32
"#),
            // reachabilityAllow: ExpectAllEgress(x/a, false); Expect(x/a, x/b, true)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   X   X   X   X   X   X   X
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/ingress-and-egress-independent",
        upstream: "NetworkPolicy between server and client: should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-egress-for-target
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Egress]
  egress:
  - {}
"#),
            // allowEgressReachability: everything connected
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-ingress-via-label-selector
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress: []
"#),
            // denyIngressToXReachability: ExpectAllIngress(x/a, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   X   .   .   -   .   .   .   .   .
y/b   X   .   .   .   -   .   .   .   .
y/c   X   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/sctp-policy-is-not-tcp",
        upstream: "NetworkPolicy between server and client: should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-ingress
  namespace: x
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: []
"#),
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-only-sctp-ingress-on-port-81
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - {port: 81, protocol: SCTP}
"#),
            // ExpectPeer({}, {x}, false)
            Expect(Tcp, 81, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   X   .   .   .   .   .   .
x/b   X   -   X   .   .   .   .   .   .
x/c   X   X   -   .   .   .   .   .   .
y/a   X   X   X   -   .   .   .   .   .
y/b   X   X   X   .   -   .   .   .   .
y/c   X   X   X   .   .   -   .   .   .
z/a   X   X   X   .   .   .   -   .   .
z/b   X   X   X   .   .   .   .   -   .
z/c   X   X   X   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/sctp-policy-isolates",
        upstream: "NetworkPolicy between server and client: should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-only-sctp-ingress-on-port-80
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - {port: 80, protocol: SCTP}
"#),
            // ExpectAllIngress(x/a, false)
            Expect(Tcp, 81, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   X   .   .   -   .   .   .   .   .
y/b   X   .   .   .   -   .   .   .   .
y/c   X   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/udp-policy-is-not-tcp",
        upstream: "NetworkPolicy between server and client: should not allow access by TCP when a policy specifies only UDP",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-only-udp-ingress-on-port-81
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - {port: 81, protocol: UDP}
"#),
            // ExpectAllIngress(x/a, false)
            Expect(Tcp, 81, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   X   .   .   -   .   .   .   .   .
y/b   X   .   .   .   -   .   .   .   .
y/c   X   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/default-namespace-label-match-labels",
        upstream: "NetworkPolicy between server and client: should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-client-a-via-ns-selector-for-immutable-ns-label
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: y}
"#),
            // ExpectPeer({x}, {x/a}, false); ExpectPeer({z}, {x/a}, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "tcp/default-namespace-label-match-expressions",
        upstream: "NetworkPolicy between server and client: should enforce policy based on NamespaceSelector with MatchExpressions using default ns label",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-ns-y-match-selector-for-immutable-ns-label
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector:
        matchExpressions:
        - {key: kubernetes.io/metadata.name, operator: NotIn, values: [y]}
"#),
            // ExpectPeer({x/a}, {y}, false)
            Expect(Tcp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   X   X   X   .   .   .
x/b   .   -   .   .   .   .   .   .   .
x/c   .   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   .   .   .   .   .   .   -   .   .
z/b   .   .   .   .   .   .   .   -   .
z/c   .   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "udp/default-deny-ingress",
        upstream: "NetworkPolicy between server and client using UDP: should support a 'default-deny-ingress' policy",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
  namespace: x
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: []
"#),
            // ExpectPeer({}, {x}, false)
            Expect(Udp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   X   .   .   .   .   .   .
x/b   X   -   X   .   .   .   .   .   .
x/c   X   X   -   .   .   .   .   .   .
y/a   X   X   X   -   .   .   .   .   .
y/b   X   X   X   .   -   .   .   .   .
y/c   X   X   X   .   .   -   .   .   .
z/a   X   X   X   .   .   .   -   .   .
z/b   X   X   X   .   .   .   .   -   .
z/c   X   X   X   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "udp/ports",
        upstream: "NetworkPolicy between server and client using UDP: should enforce policy based on Ports",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-ingress-on-port-81-ns-x
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: y}
    ports:
    - {port: 81, protocol: UDP}
"#),
            // ExpectPeer({x}, {x/a}, false); ExpectPeer({z}, {x/a}, false)
            Expect(Udp, 81, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "udp/pod-in-other-namespace-by-pod-and-namespace-selector",
        upstream: "NetworkPolicy between server and client using UDP: should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-ns-y-pod-a-via-namespace-pod-selector
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: y}
      podSelector:
        matchLabels: {pod: a}
"#),
            // ExpectAllIngress(x/a, false); Expect(y/a, x/a, true)
            Expect(Udp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   X   .   .   .   -   .   .   .   .
y/c   X   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "sctp/default-deny-ingress",
        upstream: "NetworkPolicy between server and client using SCTP: should support a 'default-deny-ingress' policy",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
  namespace: x
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: []
"#),
            // ExpectPeer({}, {x}, false)
            Expect(Sctp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   X   X   .   .   .   .   .   .
x/b   X   -   X   .   .   .   .   .   .
x/c   X   X   -   .   .   .   .   .   .
y/a   X   X   X   -   .   .   .   .   .
y/b   X   X   X   .   -   .   .   .   .
y/c   X   X   X   .   .   -   .   .   .
z/a   X   X   X   .   .   .   -   .   .
z/b   X   X   X   .   .   .   .   -   .
z/c   X   X   X   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "sctp/ports",
        upstream: "NetworkPolicy between server and client using SCTP: should enforce policy based on Ports",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-ingress-on-port-81-ns-x
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: y}
    ports:
    - {port: 81, protocol: SCTP}
"#),
            // ExpectPeer({x}, {x/a}, false); ExpectPeer({z}, {x/a}, false)
            Expect(Sctp, 81, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   .   .   .   .   -   .   .   .   .
y/c   .   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
    Case {
        name: "sctp/pod-in-other-namespace-by-pod-and-namespace-selector",
        upstream: "NetworkPolicy between server and client using SCTP: should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
        steps: &[
            Apply(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-ns-y-pod-a-via-namespace-pod-selector
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: y}
      podSelector:
        matchLabels: {pod: a}
"#),
            // ExpectAllIngress(x/a, false); Expect(y/a, x/a, true)
            Expect(Sctp, 80, "
      x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   -   .   .   .   .   .   .   .   .
x/b   X   -   .   .   .   .   .   .   .
x/c   X   .   -   .   .   .   .   .   .
y/a   .   .   .   -   .   .   .   .   .
y/b   X   .   .   .   -   .   .   .   .
y/c   X   .   .   .   .   -   .   .   .
z/a   X   .   .   .   .   .   -   .   .
z/b   X   .   .   .   .   .   .   -   .
z/c   X   .   .   .   .   .   .   .   -
"),
        ],
    },
];
