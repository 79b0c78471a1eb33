"""The registry's two tables: names, columns and what each column means.

Kept apart from the registry's code (which imports the candidates) so that the asset
definitions can show the tables' schema without importing anything heavy.
"""

ML_SCHEMA = "ml"
VERSIONS_TABLE = f"{ML_SCHEMA}.model_versions"
CHAMPION_TABLE = f"{ML_SCHEMA}.champion"

VERSIONS_COLUMNS = {
    "version": "VARCHAR PRIMARY KEY",
    "algorithm": "VARCHAR NOT NULL",
    "role": "VARCHAR NOT NULL",
    "test_auc": "DOUBLE",
    "test_logloss": "DOUBLE",
    "valid_auc": "DOUBLE",
    "valid_logloss": "DOUBLE",
    "cv_auc": "DOUBLE",
    "cv_auc_std": "DOUBLE",
    "is_champion": "BOOLEAN NOT NULL",
    "created_at": "TIMESTAMP NOT NULL",
    "last_trained_at": "TIMESTAMP NOT NULL",
    "split_strategy": "VARCHAR NOT NULL",
    "split_description": "JSON",
    "params": "JSON",
    "metrics": "JSON",
    "calibration": "VARCHAR",
    "training_data_version": "VARCHAR NOT NULL",
    "code_version": "VARCHAR NOT NULL",
    "artifact_path": "VARCHAR NOT NULL",
    "manifest_sha256": "VARCHAR NOT NULL",
}

CHAMPION_COLUMNS = {
    "version": "VARCHAR NOT NULL",
    "promoted_at": "TIMESTAMP NOT NULL",
    "previous_version": "VARCHAR",
    "reference_version": "VARCHAR",
    "challenger_auc": "DOUBLE",
    "reference_auc": "DOUBLE",
    "auc_difference": "DOUBLE",
    "ci_low": "DOUBLE",
    "ci_high": "DOUBLE",
    "margin": "DOUBLE",
    "test_rows": "BIGINT",
}

VERSIONS_DESCRIPTIONS = {
    "version": "<algorithm>-<16 hex>: the hash of the model folder's manifest.",
    "algorithm": "Candidate algorithm (logistic_regression, random_forest, xgboost, lightgbm, ensemble, ...).",
    "role": "baseline (sets the floor) or challenger (competes for champion), from the candidate.",
    "test_auc": "ROC-AUC on the out-of-time test months.",
    "test_logloss": "Log loss on the test months.",
    "valid_auc": "ROC-AUC on the validation months.",
    "valid_logloss": "Log loss on the validation months.",
    "cv_auc": "Mean ROC-AUC of 5-fold cross-validation on train + validation (out-of-time splits: valid_auc).",
    "cv_auc_std": "Standard deviation of the cross-validated AUC over the folds.",
    "is_champion": "True for the current champion (one row at most).",
    "created_at": "When this version was first registered.",
    "last_trained_at": "When a run last produced this version (same data, seed and settings give the same version).",
    "split_strategy": "How the training set was split: out_of_time or stratified_random.",
    "split_description": "The split's months or fractions and row counts.",
    "params": "The fitted model's parameters.",
    "metrics": "Every metric measured at training time.",
    "calibration": "Probability calibration applied: none, sigmoid or isotonic.",
    "training_data_version": "Hash of the training set the model was fitted on.",
    "code_version": "Version of the candidate's code.",
    "artifact_path": "Model folder under $CHURN_HOME/artifacts/models/.",
    "manifest_sha256": "SHA-256 of the folder's manifest, checked before every load.",
}

CHAMPION_DESCRIPTIONS = {
    "version": "The model promoted.",
    "promoted_at": "When it was promoted.",
    "previous_version": "The champion it replaced (NULL for the first).",
    "reference_version": "The model it was compared with.",
    "challenger_auc": "Its AUC on the shared test rows.",
    "reference_auc": "The reference's AUC on the same rows.",
    "auc_difference": "challenger_auc - reference_auc.",
    "ci_low": "Lower end of the paired bootstrap interval of the difference.",
    "ci_high": "Upper end of that interval.",
    "margin": "The promotion margin the difference had to beat.",
    "test_rows": "Rows the comparison used.",
}
