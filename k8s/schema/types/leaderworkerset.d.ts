// LeaderWorkerSet (leaderworkerset.x-k8s.io/v1, kubernetes-sigs/lws): no registry this build can reach publishes its
// schema, so its fields are declared here from the v1 API; the pod templates inside are the published core types, so
// everything a pod runs is checked as strictly as a Deployment's. Keep in step with the LWS version the cluster runs.
import type { IObjectMeta } from "@kubernetes-models/apimachinery/apis/meta/v1/ObjectMeta";
import type { IPodTemplateSpec } from "kubernetes-models/v1/PodTemplateSpec";
import type { IPersistentVolumeClaim } from "kubernetes-models/v1/PersistentVolumeClaim";
import type { IStatefulSetPersistentVolumeClaimRetentionPolicy } from "kubernetes-models/apps/v1/StatefulSetPersistentVolumeClaimRetentionPolicy";

export interface ILeaderWorkerSet {
    "apiVersion": "leaderworkerset.x-k8s.io/v1";
    "kind": "LeaderWorkerSet";
    "metadata"?: IObjectMeta;
    "spec"?: ILeaderWorkerSetSpec;
}

export interface ILeaderWorkerSetSpec {
    /** Groups (one leader + size-1 workers each); the scale subresource HPA/KEDA use. */
    "replicas"?: number;
    "leaderWorkerTemplate": ILeaderWorkerTemplate;
    "rolloutStrategy"?: {
        "type": "RollingUpdate";
        "rollingUpdateConfiguration"?: {
            "partition"?: number;
            "maxUnavailable"?: number | string;
            "maxSurge"?: number | string;
        };
    };
    "startupPolicy"?: "LeaderCreated" | "LeaderReady";
    "networkConfig"?: {
        "subdomainPolicy": "Shared" | "UniquePerReplica";
    };
}

export interface ILeaderWorkerTemplate {
    /** Defaults to the worker template. */
    "leaderTemplate"?: IPodTemplateSpec;
    "workerTemplate": IPodTemplateSpec;
    /** Pods per group, leader included. */
    "size"?: number;
    "restartPolicy"?: "RecreateGroupOnPodRestart" | "None" | "Default";
    "subGroupPolicy"?: {
        "subGroupPolicyType"?: "LeaderWorker" | "LeaderExcluded";
        "subGroupSize"?: number;
    };
    "volumeClaimTemplates"?: IPersistentVolumeClaim[];
    "persistentVolumeClaimRetentionPolicy"?: IStatefulSetPersistentVolumeClaimRetentionPolicy;
}
