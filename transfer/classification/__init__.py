"""Classification transfer: fine-tuning (Table 9), linear probe and k-NN on ImageFolder data."""
