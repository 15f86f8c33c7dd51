# Every API the plan uses. docs/deploy.md enables the same list with gcloud before the first
# `terraform plan` (the provider needs Cloud Resource Manager and Service Usage to read the project
# and to enable anything at all); Terraform keeps them enabled and never disables them.
# tests/test_infra.py checks that every resource type here has its API in this list and that the
# docs enable the same ones.

locals {
  apis_base = [
    "cloudresourcemanager.googleapis.com", # data.google_project, project IAM members
    "serviceusage.googleapis.com",         # google_project_service
    "iam.googleapis.com",                  # service accounts and their IAM
    "iamcredentials.googleapis.com",       # impersonation: ID tokens for the "Try it" path
    "cloudfunctions.googleapis.com",
    "run.googleapis.com",        # gen2 functions run as Cloud Run services
    "cloudbuild.googleapis.com", # function builds, cloudbuild.yaml, the trigger
    "artifactregistry.googleapis.com",
    "storage.googleapis.com", # the source bucket
    "pubsub.googleapis.com",
    "sqladmin.googleapis.com", # the instance, and the connector's ephemeral certificates
    "secretmanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "logging.googleapis.com",    # log-based metrics
    "monitoring.googleapis.com", # alert policies, dashboard
  ]
  # Only with db_private_ip: the VPC, private services access and the Serverless VPC connector.
  apis_private = ["compute.googleapis.com", "servicenetworking.googleapis.com", "vpcaccess.googleapis.com"]
  # Only with a budget (billing_account set).
  apis_budget = ["billingbudgets.googleapis.com"]
  # Only with dashboard_iap: Identity-Aware Proxy in front of submit.
  apis_iap = ["iap.googleapis.com"]

  apis = concat(
    local.apis_base,
    var.db_private_ip ? local.apis_private : [],
    var.billing_account != "" ? local.apis_budget : [],
    var.dashboard_iap ? local.apis_iap : [],
  )
}

resource "google_project_service" "api" {
  for_each           = toset(local.apis)
  service            = each.key
  disable_on_destroy = false
}
