# The three secrets are created, with their first version, by gcloud BEFORE `terraform apply`
# (docs/deploy.md, step 3), and Terraform only reads their metadata here:
# - Cloud Run resolves a secret environment variable when it deploys a revision, so the HS256
#   secret must have a version, and submit's account access to it, before the function exists;
# - a version created by Terraform would put the value in the state file.
# If a secret is missing, `terraform plan` stops here, naming it, before creating anything.
# These data sources read no secret value (no google_secret_manager_secret_version anywhere).

# The HS256 signing secret for service callers' tokens (read by submit only).
data "google_secret_manager_secret" "hs256" {
  secret_id = "${var.name}-hs256-secret"
}

# The key (32 random bytes, base64) that owners' webhook signing secrets are sealed under (AES-GCM):
# submit seals them, process and sweep open them to sign deliveries (local.secret_env).
data "google_secret_manager_secret" "webhook_key" {
  secret_id = "${var.name}-webhook-secret-key"
}

# The built-in postgres user's password, used only by the migration step in Cloud Build.
data "google_secret_manager_secret" "db_admin_password" {
  secret_id = "${var.name}-db-admin-password"
}
